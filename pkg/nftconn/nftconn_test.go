package nftconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"

	"github.com/nsnet/nsnet/internal/testns"
)

// rings maps each io_uring descriptor of this process to the files its
// fixed-file table holds, as /proc/self/fdinfo lists them ("socket:[N]").
func rings(t *testing.T) map[string][]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target != "anon_inode:[io_uring]" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		inFiles := false
		for _, l := range strings.Split(string(info), "\n") {
			switch {
			case strings.HasPrefix(l, "UserFiles:"):
				inFiles = true
			case inFiles && strings.Contains(l, ": "):
				_, f, _ := strings.Cut(l, ": ")
				files = append(files, strings.TrimSpace(f))
			case inFiles:
				inFiles = false
			}
		}
		out[e.Name()] = files
	}
	return out
}

// fdTargets maps this process's descriptors to what they refer to.
func fdTargets(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
			out[e.Name()] = target
		}
	}
	return out
}

// TestOpenParksSocket: the socket of a connection from Open outlives
// CloseLasting in a ring's fixed-file table, the connection works in the
// namespace it was opened in, and the table it made is there for others.
func TestOpenParksSocket(t *testing.T) {
	netNS := testns.New(t)
	parked.Store(0)
	beforeFDs := fdTargets(t)
	beforeRings := rings(t)
	var sock string
	err := netNS.Do(func(ns.NetNS) error {
		c, err := Open()
		if err != nil {
			return err
		}
		for fd, target := range fdTargets(t) {
			if _, ok := beforeFDs[fd]; !ok && strings.HasPrefix(target, "socket:[") {
				sock = target
			}
		}
		table := c.AddTable(&nftables.Table{Name: "nftconn_test", Family: nftables.TableFamilyINet})
		c.AddChain(&nftables.Chain{Name: "c", Table: table})
		if err := c.Flush(); err != nil {
			return err
		}
		return c.CloseLasting()
	})
	if err != nil {
		t.Fatal(err)
	}
	if sock == "" {
		t.Fatal("found no socket the connection opened")
	}
	for fd, target := range fdTargets(t) {
		if target == sock {
			t.Fatalf("descriptor %s still holds %s after CloseLasting", fd, sock)
		}
	}
	var found bool
	for fd, files := range rings(t) {
		if _, old := beforeRings[fd]; old {
			continue
		}
		if len(files) == 1 && files[0] == sock {
			found = true
		}
	}
	if !found {
		t.Fatalf("no new ring holds %s: %v", sock, rings(t))
	}
	err = netNS.Do(func(ns.NetNS) error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		_, err = c.ListTableOfFamily("nftconn_test", nftables.TableFamilyINet)
		return err
	})
	if err != nil {
		t.Fatalf("the table made through the parked connection: %v", err)
	}
}

// TestOpenBeyondMaxParked: past MaxParked a connection still works and
// its socket is released by its close, with no ring left for it.
func TestOpenBeyondMaxParked(t *testing.T) {
	netNS := testns.New(t)
	parked.Store(MaxParked)
	t.Cleanup(func() { parked.Store(0) })
	beforeRings := len(rings(t))
	beforeFDs := len(fdTargets(t))
	err := netNS.Do(func(ns.NetNS) error {
		c, err := Open()
		if err != nil {
			return err
		}
		if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
			return err
		}
		return c.CloseLasting()
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rings(t)); n != beforeRings {
		t.Fatalf("rings: %d before, %d after", beforeRings, n)
	}
	if n := len(fdTargets(t)); n != beforeFDs {
		t.Fatalf("descriptors: %d before, %d after", beforeFDs, n)
	}
}
