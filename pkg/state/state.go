// Package state keeps one small record per CNI attachment on disk, so that
// DEL, CHECK and GC can undo exactly what ADD did even when the caller gives
// them nothing: no netns, no prevResult, or a network renamed since ADD.
//
// Plugins write a record before creating the resources it describes
// (write-ahead), so after a crash at any point the record names a superset
// of what exists and teardown from it is always complete. The record's
// content is the plugin's own type.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Store is a directory of records.
type Store struct {
	dir string
}

const suffix = ".json"

// Open returns the store in dir, creating the directory if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state dir %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// The separator is a colon because neither a container ID nor an interface
// name may contain one, so the file name maps back to exactly one attachment.
func (s *Store) path(containerID, ifName string) string {
	return filepath.Join(s.dir, containerID+":"+ifName+suffix)
}

// Write stores v, JSON-encoded, as the record of an attachment, atomically: a reader sees the old record or the new one,
// never a torn file, even if the process is killed mid-write. The data is
// synced before the rename; the directory is not, because a power loss that
// could undo the rename also ends every container the record describes.
func (s *Store) Write(containerID, ifName string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding state of %s/%s: %w", containerID, ifName, err)
	}
	final := s.path(containerID, ifName)
	// Only one operation runs per attachment at a time (CNI forbids
	// concurrent calls for the same container), so a fixed temp name is safe
	// and Remove can find a temp file left by a crash.
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing state %s: %w", final, err)
	}
	return nil
}

// Read decodes the record of an attachment into v; the error wraps
// fs.ErrNotExist when there is none.
func (s *Store) Read(containerID, ifName string, v any) error {
	return readFile(s.path(containerID, ifName), v)
}

func readFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding state %s: %w", path, err)
	}
	return nil
}

// Remove deletes the record of an attachment and any temp file a crashed
// Write left; a missing record is not an error.
func (s *Store) Remove(containerID, ifName string) error {
	p := s.path(containerID, ifName)
	var errs []error
	for _, f := range []string{p, p + ".tmp"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Entry is one stored record, undecoded. Data is nil for a torn record: the
// first Write of an attachment was cut short, so only its temp file exists
// and, the write being ahead of everything else, nothing else was made.
type Entry struct {
	ContainerID, IfName string
	Data                json.RawMessage
}

// List returns every record in the store, torn ones included. A record
// that cannot be read is reported in the error but does not hide the
// others.
func (s *Store) List() ([]Entry, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing state dir: %w", err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	var recs []Entry
	var errs []error
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), suffix)
		torn := false
		if !ok {
			if name, ok = strings.CutSuffix(e.Name(), suffix+".tmp"); !ok || names[name+suffix] {
				continue
			}
			torn = true
		}
		id, ifName, ok := strings.Cut(name, ":")
		if !ok {
			continue
		}
		if torn {
			recs = append(recs, Entry{ContainerID: id, IfName: ifName})
			continue
		}
		var raw json.RawMessage
		if err := readFile(filepath.Join(s.dir, e.Name()), &raw); err != nil {
			errs = append(errs, err)
			continue
		}
		recs = append(recs, Entry{ContainerID: id, IfName: ifName, Data: raw})
	}
	return recs, errors.Join(errs...)
}

// ErrLockTimeout is returned by Lock when another process holds the lock
// for longer than the timeout.
var ErrLockTimeout = errors.New("timed out waiting for lock")

// Lock takes an exclusive lock on the store's lock file, shared by every
// process using the same directory, and returns the function releasing it.
func (s *Store) Lock(timeout time.Duration) (unlock func(), err error) {
	name := filepath.Join(s.dir, "lock")
	f, err := os.OpenFile(name, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", name, err)
	}
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", name, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", name, ErrLockTimeout)
		}
		time.Sleep(wait)
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}

// Sweep calls fn for every record whose attachment keep rejects, and
// removes rejected torn records itself (nothing else exists for them). It
// keeps going past errors and returns them all, as garbage collection
// must.
func (s *Store) Sweep(keep func(containerID, ifName string) bool, fn func(Entry) error) error {
	entries, err := s.List()
	errs := []error{err}
	for _, e := range entries {
		switch {
		case keep(e.ContainerID, e.IfName):
		case e.Data == nil:
			errs = append(errs, s.Remove(e.ContainerID, e.IfName))
		default:
			errs = append(errs, fn(e))
		}
	}
	return errors.Join(errs...)
}
