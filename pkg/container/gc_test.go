package container

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGCWithoutNetwork covers which containers GC touches; detaching from
// a CNI network is covered by the end-to-end tests.
func TestGCWithoutNetwork(t *testing.T) {
	self := os.Getpid()
	start, err := startTime(self)
	if err != nil {
		t.Fatal(err)
	}
	s := Store{Root: filepath.Join(t.TempDir(), "state")}
	for _, tc := range []struct {
		st      State
		removed bool
	}{
		// Its nsnet died: nothing waits for it any more.
		{State{ID: "gone-rm", Status: Running, Config: Config{AutoRemove: true}}, true},
		{State{ID: "gone-kept", Status: Running}, false},
		// Alive, or being finished by a live monitor.
		{State{ID: "running-rm", Status: Running, Pid: self, PidStart: start, Config: Config{AutoRemove: true}}, false},
		{State{ID: "finishing-rm", Status: Stopped, Monitor: self, MonitorStart: start, Config: Config{AutoRemove: true}}, false},
		{State{ID: "creating-rm", Status: Created, Monitor: self, MonitorStart: start, Config: Config{AutoRemove: true}}, false},
	} {
		st := tc.st
		st.Name, st.Created = st.ID, time.Unix(1, 0)
		if err := s.create(&st); err != nil {
			t.Fatal(err)
		}
	}
	done, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 1 || done[0] != (Collected{ID: "gone-rm", Name: "gone-rm", Removed: true}) {
		t.Errorf("GC did %+v, want only gone-rm removed", done)
	}
	for _, id := range []string{"gone-kept", "running-rm", "finishing-rm", "creating-rm"} {
		if _, err := s.read(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if _, err := s.read("gone-rm"); err == nil {
		t.Error("gone-rm is still recorded")
	}
}

func TestGCPrunesStaleNames(t *testing.T) {
	s := Store{Root: t.TempDir()}
	for _, st := range []*State{{ID: "aaaa1111", Name: "kept"}, {ID: "bbbb2222", Name: "stale"}} {
		if err := s.create(st); err != nil {
			t.Fatal(err)
		}
	}
	// A removal cut short: the directory went, the link stayed.
	if err := os.RemoveAll(s.Dir("bbbb2222")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(s.namePath("stale")); err == nil {
		t.Error("GC left the link of a container that is gone")
	}
	if s.nameOwner("kept") != "aaaa1111" {
		t.Error("GC dropped the link of a live container")
	}
}
