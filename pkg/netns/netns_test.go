package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"ns1", true},
		{"a.b-c_d", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{strings.Repeat("x", 254), true},
		{strings.Repeat("x", 255), false},
	}
	for _, tt := range tests {
		if err := ValidName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestListSortsAndToleratesMissingDir(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b", "a", "c"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Registry{RunDir: dir}.List()
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("List = %v, %v", got, err)
	}
	got, err = Registry{RunDir: filepath.Join(dir, "missing")}.List()
	if err != nil || len(got) != 0 {
		t.Errorf("List of a missing dir = %v, %v", got, err)
	}
}

func TestRefusesBadNames(t *testing.T) {
	r := Registry{RunDir: t.TempDir(), ConfDir: t.TempDir()}
	if err := r.Add("../x"); err == nil {
		t.Error("Add accepted ../x")
	}
	if err := r.Delete("a/b"); err == nil {
		t.Error("Delete accepted a/b")
	}
	if err := r.Exec("..", []string{"true"}, nil, func(error) {}); err == nil {
		t.Error("Exec accepted ..")
	}
}

// TestAddDeleteInteropWithIproute2 pins a namespace in the real /run/netns
// (already a shared mount point wherever iproute2 has run) under a test
// name, and checks iproute2 sees and uses it.
func TestAddDeleteInteropWithIproute2(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a named network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "nsnt" + hex.EncodeToString(b) + "-unit"
	r := Default()
	if err := r.Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Delete(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cleanup: %v", err)
		}
	})
	var st unix.Statfs_t
	if err := unix.Statfs(r.Path(name), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s is not an nsfs mount: type %#x, %v", r.Path(name), st.Type, err)
	}
	if err := r.Add(name); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Add: %v, want ErrExist", err)
	}
	out, err := exec.Command("ip", "netns", "exec", name, "ip", "-o", "link").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "lo:") || strings.Count(string(out), "\n") != 1 {
		t.Errorf("ip netns exec in the new netns: %v\n%s", err, out)
	}
	names, err := r.List()
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("List = %v, %v; want %s in it", names, err, name)
	}
	if err := r.Delete(name); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Delete: %v, want ErrNotExist", err)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), name) {
		t.Errorf("mount of %s left after Delete", name)
	}
}
