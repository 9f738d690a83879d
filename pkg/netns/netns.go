// Package netns manages named network namespaces the iproute2 way, so that
// `ip netns` and nsnet see the same namespaces: each is an nsfs bind mount
// at <RunDir>/<name>, RunDir is a shared mount point so the bind mounts
// reach every mount namespace, and per-netns files in <ConfDir>/<name>/ are
// bind-mounted over /etc when a command runs in the namespace.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Default directories of iproute2.
const (
	DefaultRunDir  = "/run/netns"
	DefaultConfDir = "/etc/netns"
)

// Registry is a directory of named namespaces and the directory of their
// per-netns config files.
type Registry struct {
	RunDir  string
	ConfDir string
}

// Default is the registry `ip netns` uses.
func Default() Registry {
	return Registry{RunDir: DefaultRunDir, ConfDir: DefaultConfDir}
}

// ValidName reports why name cannot name a namespace: it becomes a file
// name in RunDir and ConfDir.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty netns name")
	case name == "." || name == "..":
		return fmt.Errorf("invalid netns name %q", name)
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("invalid netns name %q: contains '/'", name)
	case len(name) >= 255:
		return fmt.Errorf("invalid netns name %q: too long", name)
	}
	return nil
}

// Path is the namespace file of name.
func (r Registry) Path(name string) string { return filepath.Join(r.RunDir, name) }

// Add creates a new, empty network namespace and pins it at Path(name).
// Like `ip netns add`, it first makes RunDir a shared mount point (bind
// mounting it onto itself if it is not a mount point yet), so the pin shows
// up in mount namespaces created later and a delete reaches them too.
func (r Registry) Add(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := r.shareRunDir(); err != nil {
		return err
	}
	path := r.Path(name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("creating netns %s: %w", name, err)
	}
	f.Close()
	if err := pinNewNetNS(path); err != nil {
		if rerr := os.Remove(path); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	return nil
}

func (r Registry) shareRunDir() error {
	if err := os.MkdirAll(r.RunDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", r.RunDir, err)
	}
	bound := false
	for {
		err := unix.Mount("", r.RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: not a mount point yet.
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("making %s a shared mount point: %w", r.RunDir, err)
		}
		if err := unix.Mount(r.RunDir, r.RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s onto itself: %w", r.RunDir, err)
		}
		bound = true
	}
}

// pinNewNetNS creates a network namespace on a throw-away thread and bind
// mounts it at path. The thread is never unlocked, so the Go runtime ends it
// instead of running other goroutines in the new namespace.
func pinNewNetNS(path string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("creating network namespace: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mounting %s at %s: %w", self, path, err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// Delete unpins name (lazily, as `ip netns del` does: processes still in
// the namespace keep it) and removes its file. The error wraps
// fs.ErrNotExist when there is no such namespace.
func (r Registry) Delete(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	path := r.Path(name)
	// EINVAL means it was not mounted, which still leaves a file to remove.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("deleting netns %s: %w", name, err)
	}
	return nil
}

// List returns the names in RunDir, sorted; a missing RunDir holds none.
func (r Registry) List() ([]string, error) {
	ents, err := os.ReadDir(r.RunDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", r.RunDir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// Exec replaces the process with argv run inside name the way `ip netns
// exec` does: in a new mount namespace that receives no mounts back from
// the host's, with /sys remounted so it describes the namespace, and every
// file of ConfDir/<name>/ bind-mounted over its /etc counterpart. It
// returns only on failure; then the calling thread is left in the new
// namespaces and locked, so the caller should exit.
func (r Registry) Exec(name string, argv, env []string, warn func(error)) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	// Looked up before entering the namespaces: PATH names the host's files.
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	fd, err := unix.Open(r.Path(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", name, err)
	}
	defer unix.Close(fd)

	// Namespaces are per thread; execve from this thread hands them to the
	// new program. The thread is never unlocked: it must not run anything
	// else once it has switched.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("creating mount namespace: %w", err)
	}
	// Without this the /sys and /etc mounts below would propagate back to
	// the host through shared mounts.
	if err := unix.Mount("", "/", "none", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making / a slave mount: %w", err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering netns %s: %w", name, err)
	}
	if err := remountSys(name); err != nil {
		return err
	}
	bindEtc(filepath.Join(r.ConfDir, name), warn)
	if err := syscall.Exec(bin, argv, env); err != nil {
		return fmt.Errorf("exec %s: %w", argv[0], err)
	}
	return nil
}

// remountSys mounts a sysfs that shows the current network namespace's
// devices (/sys/class/net) over /sys, read-only if /sys was.
func remountSys(name string) error {
	var flags uintptr
	var st unix.Statfs_t
	if unix.Statfs("/sys", &st) == nil && st.Flags&unix.ST_RDONLY != 0 {
		flags = unix.MS_RDONLY
	}
	// Failing means nothing was mounted on /sys, which is fine.
	_ = unix.Unmount("/sys", unix.MNT_DETACH)
	if err := unix.Mount(name, "/sys", "sysfs", flags, ""); err != nil {
		return fmt.Errorf("mounting sysfs for netns %s on /sys: %w", name, err)
	}
	return nil
}

// bindEtc bind-mounts every entry of dir over /etc/<entry>. Like iproute2 it
// goes on past an entry that cannot be mounted (its /etc target is missing,
// say), reporting it through warn.
func bindEtc(dir string, warn func(error)) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			warn(fmt.Errorf("listing %s: %w", dir, err))
		}
		return
	}
	for _, e := range ents {
		src, dst := filepath.Join(dir, e.Name()), filepath.Join("/etc", e.Name())
		if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
			warn(fmt.Errorf("bind-mounting %s over %s: %w", src, dst, err))
		}
	}
}
