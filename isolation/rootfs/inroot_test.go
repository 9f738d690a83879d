package rootfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParsePropagation(t *testing.T) {
	tests := []struct {
		in   string
		want uintptr
		err  bool
	}{
		{"", unix.MS_REC | unix.MS_PRIVATE, false},
		{"private", unix.MS_REC | unix.MS_PRIVATE, false},
		{"rprivate", unix.MS_REC | unix.MS_PRIVATE, false},
		{"slave", unix.MS_REC | unix.MS_SLAVE, false},
		{"rslave", unix.MS_REC | unix.MS_SLAVE, false},
		{"shared", 0, true},
		{"rshared", 0, true},
		{"unbindable", 0, true},
		{"Private", 0, true},
	}
	for _, tt := range tests {
		got, err := ParsePropagation(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParsePropagation(%q) = %#x, %v", tt.in, got, err)
		}
	}
}

func TestRelative(t *testing.T) {
	for in, want := range map[string]string{
		"/":               ".",
		"":                ".",
		"/etc/hosts":      "etc/hosts",
		"etc//hosts/":     "etc/hosts",
		"/../../etc":      "etc",
		"/a/b/../../../c": "c",
	} {
		if got := relative(in); got != want {
			t.Errorf("relative(%q) = %q, want %q", in, got, want)
		}
	}
}

// newRoot returns a root in a temp dir and a host directory outside it
// that a symlink in the root tries to reach.
func newRoot(t *testing.T) (*root, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := openRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r, t.TempDir()
}

func TestMkdirAllStaysInRoot(t *testing.T) {
	r, outside := newRoot(t)
	// Climbing out with ".." stops at the root, so "up" names the copy of
	// the outside path inside the root.
	if err := os.Symlink("../../../../../../.."+outside, filepath.Join(r.path, "up")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(r.path, outside), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := r.mkdirAll("up/made", false)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if _, err := os.Stat(filepath.Join(outside, "made")); err == nil {
		t.Fatal("directory created outside the root")
	}
	if _, err := os.Stat(filepath.Join(r.path, outside, "made")); err != nil {
		t.Fatalf("directory not created inside the root: %v", err)
	}
}

func TestMkdirAllStrictRefusesSymlinks(t *testing.T) {
	r, outside := newRoot(t)
	if err := os.Symlink(outside, filepath.Join(r.path, "proc")); err != nil {
		t.Fatal(err)
	}
	if fd, err := r.mkdirAll("proc", true); err == nil {
		unix.Close(fd)
		t.Fatal("strict mkdirAll followed a symlink")
	}
}

func TestMkfileDoesNotFollowDanglingSymlink(t *testing.T) {
	r, outside := newRoot(t)
	target := filepath.Join(outside, "created")
	if err := os.MkdirAll(filepath.Join(r.path, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(r.path, "etc", "hosts")); err != nil {
		t.Fatal(err)
	}
	if fd, err := r.mkfile("/etc/hosts", false); err == nil {
		unix.Close(fd)
		t.Fatal("mkfile succeeded through a dangling symlink")
	}
	if _, err := os.Stat(target); err == nil {
		t.Fatal("file created outside the root")
	}
}

func TestMkfileCreatesParents(t *testing.T) {
	r, _ := newRoot(t)
	fd, err := r.mkfile("/etc/deep/resolv.conf", false)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	st, err := os.Stat(filepath.Join(r.path, "etc", "deep", "resolv.conf"))
	if err != nil || !st.Mode().IsRegular() {
		t.Fatalf("mount point not created as a file: %v", err)
	}
	// An existing file is reused.
	fd, err = r.mkfile("etc/deep/resolv.conf", false)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
}
