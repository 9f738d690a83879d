package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// cpioEntry is one entry read back from a newc archive.
type cpioEntry struct {
	name       string
	mode       uint32
	data       string
	rmaj, rmin uint32
}

// readNewc parses a newc archive the way the kernel does, checking the
// magic and the 4-byte alignment of every header and body.
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("header field %d at %d: %v", i, off, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 || off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at offset %d", off)
		}
		mode, size, rmaj, rmin, namesize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+int(namesize)-1])
		body := (off + 110 + int(namesize) + 3) &^ 3
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{name: name, mode: mode, data: string(b[body : body+int(size)]), rmaj: rmaj, rmin: rmin})
		off = (body + int(size) + 3) &^ 3
	}
}

func TestArchive(t *testing.T) {
	src := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"), 0o750); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	a := NewArchive(&buf)
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.Dir("/tmp", 0o777|os.ModeSticky)
	a.File("/a/b/c.txt", 0o644, []byte("hello"))
	a.CopyFile("/a/b/prog", src)
	a.Symlink("/bin/sh", "busybox")
	a.Dir("/a", 0o755) // already made as a parent: not repeated
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{name: "dev", mode: 0o040755},
		{name: "dev/console", mode: 0o020600, rmaj: 5, rmin: 1},
		{name: "tmp", mode: 0o041777},
		{name: "a", mode: 0o040755},
		{name: "a/b", mode: 0o040755},
		{name: "a/b/c.txt", mode: 0o100644, data: "hello"},
		{name: "a/b/prog", mode: 0o100750, data: "#!/bin/sh\n"},
		{name: "bin", mode: 0o040755},
		{name: "bin/sh", mode: 0o120777, data: "busybox"},
	}
	got := readNewc(t, buf.Bytes())
	if len(got) != len(want) {
		t.Fatalf("got %d entries %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestArchiveErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, src string }{
		{"missing file", filepath.Join(dir, "nope")},
		{"directory", dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewArchive(&bytes.Buffer{})
			a.CopyFile("/x", tc.src)
			a.File("/y", 0o644, nil) // ignored after the first error
			if err := a.Close(); err == nil {
				t.Fatal("Close succeeded, want the CopyFile error")
			}
		})
	}
}
