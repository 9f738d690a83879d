package ipam

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

// Names and bytes shared with the reference host-local store.
const (
	lockName     = "lock"
	lastIPPrefix = "last_reserved_ip."
	lineBreak    = "\r\n"
	// tmpPrefix marks files that are not reservations yet. The leading dot
	// keeps them from parsing as an address in host-local's GetByID.
	tmpPrefix = ".nsnet-"
)

var errNoStore = errors.New("network has no data directory")

// store is one network's directory <dataDir>/<network>.
type store struct {
	path   string
	dirfd  int
	lockfd int
	// linkOnly is set once the file system refuses RENAME_NOREPLACE.
	linkOnly bool
}

// openStore opens the directory, creating it when create is set; without
// create a missing directory gives errNoStore.
func openStore(path string, create bool) (*store, error) {
	if create {
		if err := os.MkdirAll(path, 0o755); err != nil {
			return nil, fmt.Errorf("creating data dir %s: %w", path, err)
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if !create && errors.Is(err, unix.ENOENT) {
			return nil, errNoStore
		}
		return nil, fmt.Errorf("opening data dir %s: %w", path, err)
	}
	return &store{path: path, dirfd: fd, lockfd: -1}, nil
}

// close also drops the lock.
func (s *store) close() {
	if s.lockfd >= 0 {
		unix.Close(s.lockfd)
		s.lockfd = -1
	}
	unix.Close(s.dirfd)
}

// lock takes host-local's flock on <dir>/lock, polling so that both timeout
// and ctx can end the wait; a blocking flock cannot be interrupted.
func (s *store) lock(ctx context.Context, timeout time.Duration) error {
	lockPath := filepath.Join(s.path, lockName)
	fd, err := unix.Openat(s.dirfd, lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("opening lock %s: %w", lockPath, err)
	}
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			s.lockfd = fd
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			unix.Close(fd)
			return fmt.Errorf("locking %s: %w", lockPath, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			unix.Close(fd)
			return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("timed out after %v waiting for lock %s", timeout, lockPath), "")
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			unix.Close(fd)
			return fmt.Errorf("waiting for lock %s: %w", lockPath, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// writeTemp stores content under a fresh temp name, fsynced when durable is set.
func (s *store) writeTemp(content []byte, durable bool) (string, error) {
	for {
		name := tmpPrefix + strconv.FormatUint(rand.Uint64(), 36)
		fd, err := unix.Openat(s.dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("creating temp file in %s: %w", s.path, err)
		}
		f := os.NewFile(uintptr(fd), filepath.Join(s.path, name))
		_, err = f.Write(content)
		if err == nil && durable {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			s.remove(name)
			return "", fmt.Errorf("writing %s: %w", f.Name(), err)
		}
		return name, nil
	}
}

// claim gives the complete temp file tmp the name name unless that exists.
// After a successful link(2) fallback tmp still exists; callers drop it.
func (s *store) claim(tmp, name string) (bool, error) {
	if !s.linkOnly {
		err := unix.Renameat2(s.dirfd, tmp, s.dirfd, name, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EEXIST):
			return false, nil
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
			s.linkOnly = true
		default:
			return false, fmt.Errorf("reserving %s in %s: %w", name, s.path, err)
		}
	}
	err := unix.Linkat(s.dirfd, tmp, s.dirfd, name, 0)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	default:
		return false, fmt.Errorf("reserving %s in %s: %w", name, s.path, err)
	}
}

// remove deletes name; a missing file is already the desired state.
func (s *store) remove(name string) error {
	if err := unix.Unlinkat(s.dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", filepath.Join(s.path, name), err)
	}
	return nil
}

// exists reports whether a file called name is present.
func (s *store) exists(name string) (bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(s.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, fmt.Errorf("checking %s: %w", filepath.Join(s.path, name), err)
	}
}

// owner reads a reservation file; fs.ErrNotExist when it is absent.
func (s *store) owner(name string) (owner, error) {
	b, err := os.ReadFile(filepath.Join(s.path, name))
	if err != nil {
		return owner{}, err
	}
	return parseOwner(b), nil
}

// lastReserved is the round-robin cursor of range set idx; invalid when
// absent or unreadable, which only costs the round-robin position.
func (s *store) lastReserved(idx int) netip.Addr {
	b, err := os.ReadFile(filepath.Join(s.path, lastIPPrefix+strconv.Itoa(idx)))
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// setLastReserved replaces the cursor atomically; host-local rewrites it in
// place, which a crash can leave empty.
func (s *store) setLastReserved(idx int, a netip.Addr) error {
	tmp, err := s.writeTemp([]byte(a.String()), false)
	if err != nil {
		return err
	}
	name := lastIPPrefix + strconv.Itoa(idx)
	if err := unix.Renameat(s.dirfd, tmp, s.dirfd, name); err != nil {
		s.remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Join(s.path, name), err)
	}
	return nil
}

// reservations lists the files that may hold a reservation: those named by
// an address. Leftover temp files are returned separately; under the lock
// every one of them is stale.
func (s *store) reservations() (ips []string, temps []string, err error) {
	entries, err := os.ReadDir(s.path)
	if err != nil {
		return nil, nil, fmt.Errorf("listing %s: %w", s.path, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			temps = append(temps, name)
			continue
		}
		if _, err := netip.ParseAddr(name); err == nil {
			ips = append(ips, name)
		}
	}
	return ips, temps, nil
}

// owner is the content of a reservation file. Files written by host-local
// before it recorded the interface hold only the container ID (legacy).
type owner struct {
	id, ifname string
	legacy     bool
}

func parseOwner(b []byte) owner {
	t := strings.TrimSpace(string(b))
	if id, ifname, ok := strings.Cut(t, lineBreak); ok {
		return owner{id: id, ifname: ifname}
	}
	return owner{id: t, legacy: true}
}

func ownerBytes(a Attachment) []byte {
	return []byte(strings.TrimSpace(a.ContainerID) + lineBreak + a.IfName)
}

// is reports an exact match on container ID and interface.
func (o owner) is(a Attachment) bool {
	return !o.legacy && o.id == strings.TrimSpace(a.ContainerID) && o.ifname == a.IfName
}

// legacyOf reports a legacy file of a's container.
func (o owner) legacyOf(a Attachment) bool {
	return o.legacy && o.id == strings.TrimSpace(a.ContainerID)
}

func (o owner) String() string {
	if o.legacy {
		return fmt.Sprintf("container %q", o.id)
	}
	return fmt.Sprintf("container %q interface %q", o.id, o.ifname)
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
