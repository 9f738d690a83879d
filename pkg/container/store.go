package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nsnet/nsnet/isolation"
)

// DefaultRoot is where container state lives unless RootEnv or --root
// says otherwise.
const DefaultRoot = "/run/nsnet"

// RootEnv overrides DefaultRoot; tests use it to keep their state in a
// temporary directory.
const RootEnv = "NSNET_ROOT"

// stateFile is the name of the state record in a container's directory.
const stateFile = "state.json"

// ErrNotFound is returned for an id or name no container has.
var ErrNotFound = errors.New("no such container")

// Store is the directory holding one subdirectory per container.
type Store struct {
	Root string
}

// Dir is the state directory of container id.
func (s Store) Dir(id string) string { return filepath.Join(s.Root, id) }

// namesDir, in the store's root, holds a symlink per container whose name
// is not its id, pointing at the id, so a name is claimed and looked up
// without reading every record. The dot keeps it apart from ids.
const namesDir = ".names"

func (s Store) namePath(name string) string { return filepath.Join(s.Root, namesDir, name) }

// nameOwner is the id of the container named name, or "": a link to a
// container whose directory is gone (removed by a crashed nsnet) names
// nothing.
func (s Store) nameOwner(name string) string {
	id, err := os.Readlink(s.namePath(name))
	if err != nil || CheckID(id) != nil {
		return ""
	}
	if _, err := os.Stat(s.Dir(id)); err != nil {
		return ""
	}
	return id
}

// claimName points name at id unless a container holds it. symlink(2)
// fails on an existing link, so of two nsnets claiming one name one wins.
func (s Store) claimName(name, id string) error {
	if err := os.Mkdir(filepath.Join(s.Root, namesDir), 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating the names index: %w", err)
	}
	for range 2 {
		err := os.Symlink(id, s.namePath(name))
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("recording the name %q: %w", name, err)
		}
		if s.nameOwner(name) != "" {
			break
		}
		// Left by a container that is gone: take it over.
		_ = os.Remove(s.namePath(name))
	}
	return fmt.Errorf("container name %q is already in use", name)
}

// releaseName removes the link of name if it still points at id, and the
// index once empty.
func (s Store) releaseName(name, id string) {
	if name == "" || name == id {
		return
	}
	if got, err := os.Readlink(s.namePath(name)); err == nil && got == id {
		_ = os.Remove(s.namePath(name))
	}
	_ = os.Remove(filepath.Join(s.Root, namesDir))
}

// create makes the state directory of a new container and records st in
// it; it fails if the id or the name is taken, also as the other: an id
// and a name must each find one container.
func (s Store) create(st *State) error {
	if err := os.MkdirAll(s.Root, 0o711); err != nil {
		return fmt.Errorf("creating state root %s: %w", s.Root, err)
	}
	if st.Name != st.ID {
		if _, err := os.Stat(s.Dir(st.Name)); err == nil {
			return fmt.Errorf("container name %q is already in use (as an id)", st.Name)
		}
	}
	if s.nameOwner(st.ID) != "" {
		return fmt.Errorf("container id %q is already in use (as a name)", st.ID)
	}
	dir := s.Dir(st.ID)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container id %q is already in use", st.ID)
		}
		return fmt.Errorf("creating state directory: %w", err)
	}
	if st.Name != st.ID {
		if err := s.claimName(st.Name, st.ID); err != nil {
			os.RemoveAll(dir)
			return err
		}
	}
	st.Dir = dir
	if err := s.save(st); err != nil {
		s.remove(st.ID, st.Name)
		return err
	}
	return nil
}

// PrepareEncoding builds encoding/json's encoders for what starting a
// container writes: its record and isolation's messages. The first use of
// each costs about a millisecond of reflection in all; run on a goroutine
// of its own while the caller parses and validates, it is off the way to
// the container's start.
func PrepareEncoding() {
	isolation.PrepareEncoding()
	_, _ = json.Marshal(&State{Cgroup: &Cgroup{}})
}

// save writes st crash-safely: a reader sees the old or the new record,
// never a partial one.
func (s Store) save(st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state of %s: %w", st.ID, err)
	}
	return writeAtomic(filepath.Join(s.Dir(st.ID), stateFile), data, 0o600)
}

// writeAtomic writes a temporary file next to path and renames it over
// path, so a reader, or a later nsnet after this one was killed, finds the
// whole old or the whole new record. It does not fsync: the records
// describe processes, which a crash of the machine ends anyway, and the
// state root belongs on a tmpfs (/run) that a reboot empties, as the OCI
// runtime spec recommends for container state. A sync per write would add
// milliseconds to every nsnet run on a disk-backed root for nothing.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// read loads the record of id as written, without refreshing it.
func (s Store) read(id string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(s.Dir(id), stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return nil, fmt.Errorf("reading state of %s: %w", id, err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decoding state of %s: %w", id, err)
	}
	return &st, nil
}

// Load finds a container by id, name or unique id prefix, with its status
// checked against the kernel.
func (s Store) Load(ref string) (*State, error) {
	if CheckID(ref) != nil {
		return nil, fmt.Errorf("%w: %q is not a valid id or name", ErrNotFound, ref)
	}
	id := ref
	if owner := s.nameOwner(ref); owner != "" {
		id = owner
	}
	if st, err := s.read(id); err == nil {
		return s.refreshed(st), nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	entries, err := os.ReadDir(s.Root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing %s: %w", s.Root, err)
	}
	var byPrefix []string
	for _, e := range entries {
		if e.IsDir() && CheckID(e.Name()) == nil && strings.HasPrefix(e.Name(), ref) {
			byPrefix = append(byPrefix, e.Name())
		}
	}
	switch len(byPrefix) {
	case 0:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, ref)
	case 1:
		st, err := s.read(byPrefix[0])
		if err != nil {
			return nil, err
		}
		return s.refreshed(st), nil
	}
	return nil, fmt.Errorf("container id prefix %q is ambiguous", ref)
}

// List returns every container, oldest first, with refreshed statuses.
// Directories without a readable record (a run that crashed while
// creating one) are skipped.
func (s Store) List() ([]*State, error) {
	entries, err := os.ReadDir(s.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", s.Root, err)
	}
	var out []*State
	for _, e := range entries {
		if !e.IsDir() || CheckID(e.Name()) != nil {
			continue
		}
		st, err := s.read(e.Name())
		if err != nil {
			continue
		}
		out = append(out, s.refreshed(st))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// refreshed is st with its status checked against the kernel. A monitor
// may record the exit and end between the read of st and the check, which
// then finds both it and PID 1 gone: the record is read again before the
// container is reported stopped without its exit code.
func (s Store) refreshed(st *State) *State {
	if !st.refresh() {
		return st
	}
	if again, err := s.read(st.ID); err == nil && again.Status == Stopped {
		return again
	}
	return st
}

// remove deletes the state directory of id, and the name index's link of
// name ("" when the record was unreadable: the link is taken over later).
func (s Store) remove(id, name string) error {
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		return fmt.Errorf("removing state of %s: %w", id, err)
	}
	s.releaseName(name, id)
	return nil
}
