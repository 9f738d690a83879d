package sysctl

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPaths(t *testing.T) {
	tests := []struct{ got, want string }{
		{Path("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward"},
		{PathOf("net", "ipv6", "conf", "br.10", "accept_ra"), "/proc/sys/net/ipv6/conf/br.10/accept_ra"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestEnsureWritesOnlyOnChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte("0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(p, "1"); err != nil {
		t.Fatal(err)
	}
	if v, _ := Get(p); v != "1" {
		t.Fatalf("value = %q, want 1", v)
	}
	if err := os.Chmod(p, 0o400); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 { // root may write a read-only file anyway
		if err := Ensure(p, "1"); err != nil {
			t.Fatalf("Ensure wrote an unchanged value: %v", err)
		}
	}
	if err := Set(filepath.Join(t.TempDir(), "missing"), "1"); err == nil {
		t.Fatal("Set on a missing key succeeded")
	}
}
