// Package state keeps one small record per CNI attachment on disk, so that
// DEL, CHECK and GC can undo exactly what ADD did even when the caller gives
// them nothing: no netns, no prevResult, or a network renamed since ADD.
//
// Records are written before the resources they describe are created
// (write-ahead), so after a crash at any point the record names a superset of
// what exists and teardown from it is always complete.
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

// Masq is one masquerade entry made for an attachment.
type Masq struct {
	Subnet string `json:"subnet"`
	IP     string `json:"ip"`
}

// Record describes one attachment (container ID + interface name).
type Record struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Network is the network name at ADD time; IPAM stores and NAT
	// structures are keyed by it, so it outlives a rename of the config.
	Network  string `json:"network"`
	NetNS    string `json:"netns,omitempty"`
	Bridge   string `json:"bridge,omitempty"`
	HostVeth string `json:"hostVeth,omitempty"`
	IPAMType string `json:"ipamType,omitempty"`
	// IPAMConf is the ADD-time network config, kept so that DEL and GC can
	// call a delegated IPAM plugin with what it saw at ADD.
	IPAMConf    json.RawMessage `json:"ipamConf,omitempty"`
	IPs         []string        `json:"ips,omitempty"`
	MasqBackend string          `json:"masqBackend,omitempty"`
	Masq        []Masq          `json:"masq,omitempty"`
	// Complete is set once ADD returned success; a record without it
	// belongs to an ADD that failed or was killed.
	Complete bool `json:"complete"`
}

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

// Write stores r atomically: a reader sees the old record or the new one,
// never a torn file, even if the process is killed mid-write. The data is
// synced before the rename; the directory is not, because a power loss that
// could undo the rename also ends every container the record describes.
func (s *Store) Write(r *Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding state of %s/%s: %w", r.ContainerID, r.IfName, err)
	}
	final := s.path(r.ContainerID, r.IfName)
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

// Read returns the record of an attachment; the error wraps fs.ErrNotExist
// when there is none.
func (s *Store) Read(containerID, ifName string) (*Record, error) {
	return readFile(s.path(containerID, ifName))
}

func readFile(path string) (*Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decoding state %s: %w", path, err)
	}
	return &r, nil
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

// List returns every record in the store. A record that cannot be decoded is
// reported in the error but does not hide the others.
func (s *Store) List() ([]*Record, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing state dir: %w", err)
	}
	var recs []*Record
	var errs []error
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), suffix) {
			continue
		}
		r, err := readFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		recs = append(recs, r)
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
