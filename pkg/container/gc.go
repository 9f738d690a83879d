package container

import (
	"errors"
	"os"
	"path/filepath"
)

// Collected is what GC did for one container.
type Collected struct {
	ID   string
	Name string
	// Network is the CNI network the container was detached from, if any.
	Network string
	// Removed says its state was removed: it was run with AutoRemove.
	Removed bool
}

// GC cleans up after containers whose processes are gone but whose
// nsnet could not finish them, typically because it was SIGKILLed: it
// detaches each from its CNI network (DEL, then unpinning its netns),
// removes those run with AutoRemove and records the others as stopped.
// Containers still running, or whose monitor still lives and so is about
// to finish them itself, are left alone. A container whose DEL fails
// stays recorded with its attachment, for a later gc or rm to retry; GC
// goes on with the others and returns the errors joined. It also drops
// the names-index links of containers whose directory is gone.
func (s Store) GC() ([]Collected, error) {
	defer s.pruneNames()
	list, err := s.List()
	if err != nil {
		return nil, err
	}
	var done []Collected
	var errs []error
	for _, st := range list {
		if st.Status != Stopped || st.monitorAlive() {
			continue
		}
		if st.Network == nil && st.Cgroup == nil && !st.Config.AutoRemove {
			continue
		}
		c := Collected{ID: st.ID, Name: st.Name}
		if st.Network != nil {
			name := st.Network.Name
			if err := s.detachNetwork(st); err != nil {
				errs = append(errs, err)
				continue
			}
			c.Network = name
		}
		if st.Cgroup != nil {
			if err := s.destroyCgroup(st); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if st.Config.AutoRemove {
			if err := s.remove(st.ID, st.Name); err != nil {
				errs = append(errs, err)
				continue
			}
			c.Removed = true
		} else if err := s.save(st); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, c)
	}
	return done, errors.Join(errs...)
}

// pruneNames removes the names-index links that name no container (left by
// a removal cut short), and the index once empty.
func (s Store) pruneNames() {
	entries, err := os.ReadDir(filepath.Join(s.Root, namesDir))
	if err != nil {
		return
	}
	for _, e := range entries {
		if s.nameOwner(e.Name()) == "" {
			_ = os.Remove(s.namePath(e.Name()))
		}
	}
	_ = os.Remove(filepath.Join(s.Root, namesDir))
}
