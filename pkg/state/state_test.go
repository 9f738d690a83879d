package state

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestWriteReadRemove(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "st"))
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		Network string
		IPs     []string
	}
	r := rec{Network: "n", IPs: []string{"10.0.0.2/24"}}
	if err := s.Write("c1", "eth0", r); err != nil {
		t.Fatal(err)
	}
	var got rec
	if err := s.Read("c1", "eth0", &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("read %+v, want %+v", got, r)
	}
	if err := s.Read("c1", "eth1", &got); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing record: err = %v, want ErrNotExist", err)
	}
	// A temp file left by a killed Write must go with the record.
	if err := os.WriteFile(s.path("c1", "eth0")+".tmp", []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("c1", "eth0"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	ents, _ := os.ReadDir(s.Dir())
	if len(ents) != 0 {
		t.Fatalf("files left after remove: %v", ents)
	}
}

func TestListSkipsCorruptButReportsIt(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if err := s.Write(id, "eth0", map[string]string{"network": "n"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "bad:eth0.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err := s.List()
	if err == nil {
		t.Fatal("corrupt record not reported")
	}
	if len(recs) != 2 || recs[0].ContainerID != "a" || recs[1].IfName != "eth0" {
		t.Fatalf("got records %+v, want a/eth0 and b/eth0", recs)
	}
	// A temp file next to its record is an interrupted update, not a
	// torn record; alone it is a torn first write.
	for _, n := range []string{"a:eth0.json.tmp", "c:eth1.json.tmp"} {
		if err := os.WriteFile(filepath.Join(s.Dir(), n), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	recs, _ = s.List()
	if len(recs) != 3 || recs[2].ContainerID != "c" || recs[2].IfName != "eth1" || recs[2].Data != nil {
		t.Fatalf("got records %+v, want a, b and a torn c/eth1", recs)
	}
}

func TestAttachmentNamesDoNotCollide(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if s.path("a_b", "c") == s.path("a", "b_c") {
		t.Fatal("distinct attachments share a file name")
	}
}

func TestLockExcludesAndTimesOut(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(30 * time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second lock: err = %v, want ErrLockTimeout", err)
	}
	unlock()
	unlock2, err := s.Lock(time.Second)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestSweep(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"keep", "drop", "fail"} {
		if err := s.Write(id, "eth0", map[string]string{"id": id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "torn:eth0.json.tmp"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	var visited []string
	boom := errors.New("boom")
	err = s.Sweep(func(id, _ string) bool { return id == "keep" }, func(e Entry) error {
		visited = append(visited, e.ContainerID)
		if e.ContainerID == "fail" {
			return boom
		}
		return s.Remove(e.ContainerID, e.IfName)
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the visitor's error", err)
	}
	if !reflect.DeepEqual(visited, []string{"drop", "fail"}) {
		t.Fatalf("visited %v, want [drop fail]", visited)
	}
	recs, _ := s.List()
	var left []string
	for _, r := range recs {
		left = append(left, r.ContainerID)
	}
	if !reflect.DeepEqual(left, []string{"fail", "keep"}) {
		t.Fatalf("left %v, want [fail keep] (torn and drop removed)", left)
	}
}
