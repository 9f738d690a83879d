// Package rootfs builds a container's root filesystem and switches the
// calling process into it. Setup makes every mount private (or slave), binds
// the root (or builds the embedded default root in a tmpfs), mounts /proc,
// /sys, the container's cgroups at /sys/fs/cgroup, a minimal /dev, /run and
// /tmp, binds the per-container /etc files and the volumes, and pivots into
// the result, detaching the host's tree. Harden then write-protects and
// masks the kernel interfaces a container must not touch, as runc's
// default spec does.
//
// Every function here rewrites the mount namespace of the calling process:
// they run only in nsnet's re-executed setup child, which has a mount
// namespace of its own. Paths inside the new root are resolved with
// openat2(RESOLVE_IN_ROOT), so a symlink in the image can never point a
// mount at the host.
package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Config says what to build. All host paths are absolute.
type Config struct {
	// Rootfs is the host directory that becomes /. Empty means the embedded
	// default: a tmpfs holding read-only binds of the host's /usr, /etc and
	// /bin, /sbin, /lib* (or the symlinks they are on merged-/usr systems).
	Rootfs string
	// ReadOnly makes / read-only once everything is mounted.
	ReadOnly bool
	// Propagation is "private" (the default) or "slave", applied recursively
	// to every mount before anything else is mounted.
	Propagation string
	// Binds are mounted in order, after /proc, /sys, /dev, /run and /tmp, so
	// they may cover those.
	Binds []Bind
	// Workdir is created inside the root when missing.
	Workdir string
	// Console creates /dev/console as the mount point for the container's
	// terminal, which the caller binds there after Setup.
	Console bool
	// UserNS says the process is in a new user namespace: device nodes are
	// bound from the host instead of created, and devpts gets no gid=5.
	UserNS bool
	// Privileged leaves /sys and the cgroup mounts writable and the rootfs
	// and volumes without nodev, and makes Harden skip masking and write
	// protection.
	Privileged bool
	// Cgroups are mounted at /sys/fs/cgroup. The process must be in the
	// container's cgroup namespace already.
	Cgroups Cgroups
}

// Bind is a host file or directory mounted into the container (recursively
// for directories). Directory targets are created as directories, others as
// empty files.
type Bind struct {
	Source, Target string
	ReadOnly       bool
}

// ParsePropagation maps a propagation name to mount flags. Only the modes
// that cannot push the container's mounts into the host are accepted;
// "r"-prefixed names are aliases because the mode always applies
// recursively.
func ParsePropagation(name string) (uintptr, error) {
	switch name {
	case "", "private", "rprivate":
		return unix.MS_REC | unix.MS_PRIVATE, nil
	case "slave", "rslave":
		return unix.MS_REC | unix.MS_SLAVE, nil
	}
	return 0, fmt.Errorf("unsupported mount propagation %q (want private or slave)", name)
}

// Setup builds the root described by cfg and makes it the calling process's
// root and working directory. The process must be alone in a new mount
// namespace and have the host's /proc at /proc.
func Setup(cfg Config) error {
	prop, err := ParsePropagation(cfg.Propagation)
	if err != nil {
		return err
	}
	// First, so nothing mounted below reaches the host's namespace.
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("setting the propagation of /: %w", err)
	}
	// Sources are opened before anything is mounted: the default root's
	// tmpfs may cover the directory they live in.
	srcs, err := openSources(cfg)
	if err != nil {
		return err
	}
	defer srcs.close()

	r, err := mountRoot(cfg)
	if err != nil {
		return err
	}
	defer r.close()
	if err := mountKernelFS(r, cfg, srcs); err != nil {
		return err
	}
	if err := mountCgroups(r, cfg); err != nil {
		return err
	}
	if err := mountDev(r, cfg, srcs); err != nil {
		return err
	}
	for _, t := range []struct{ dir, data string }{{"run", "mode=755,size=65536k"}, {"tmp", "mode=1777"}} {
		if err := r.mountNew(t.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, t.data); err != nil {
			return err
		}
	}
	for i, b := range cfg.Binds {
		if err := r.bind(srcs.binds[i], b.Target, b.ReadOnly, !cfg.Privileged); err != nil {
			return err
		}
	}
	if cfg.Workdir != "" {
		fd, err := r.mkdirAll(cfg.Workdir, false)
		if err != nil {
			return fmt.Errorf("creating working directory: %w", err)
		}
		unix.Close(fd)
	}
	return pivot(r)
}

// sources holds O_PATH descriptors of everything bound from the host.
type sources struct {
	binds   []*os.File
	sys     *os.File
	devices map[string]*os.File
}

func openSources(cfg Config) (*sources, error) {
	s := &sources{devices: map[string]*os.File{}}
	open := func(path string) (*os.File, error) {
		fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("opening %s: %w", path, err)
		}
		return os.NewFile(uintptr(fd), path), nil
	}
	for _, b := range cfg.Binds {
		f, err := open(b.Source)
		if err != nil {
			return nil, err
		}
		s.binds = append(s.binds, f)
	}
	var err error
	if s.sys, err = open("/sys"); err != nil {
		return nil, err
	}
	if cfg.UserNS {
		for _, d := range devices {
			if s.devices[d.name], err = open("/dev/" + d.name); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *sources) close() {
	for _, f := range s.binds {
		f.Close()
	}
	if s.sys != nil {
		s.sys.Close()
	}
	for _, f := range s.devices {
		f.Close()
	}
}

// mountRoot makes the new root a mount point and returns a handle on it.
func mountRoot(cfg Config) (*root, error) {
	if cfg.Rootfs == "" {
		return buildDefaultRoot()
	}
	if err := unix.Mount(cfg.Rootfs, cfg.Rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return nil, fmt.Errorf("binding rootfs %s onto itself: %w", cfg.Rootfs, err)
	}
	r, err := openRoot(cfg.Rootfs)
	if err != nil {
		return nil, err
	}
	// Without a devices cgroup, nodev is what keeps a device node planted
	// in the image (or made with CAP_MKNOD) from being opened.
	if !cfg.Privileged {
		if err := setAttr(r.fd, unix.MOUNT_ATTR_NODEV, true); err != nil {
			r.close()
			return nil, fmt.Errorf("making rootfs nodev: %w", err)
		}
	}
	return r, nil
}

// mountKernelFS mounts a procfs of the new PID namespace and sysfs. sysfs
// can only be mounted by a user namespace that owns the network namespace;
// otherwise the host's /sys is bound read-only instead.
func mountKernelFS(r *root, cfg Config, srcs *sources) error {
	if err := r.mountNew("proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !cfg.Privileged {
		flags |= unix.MS_RDONLY
	}
	err := r.mountNew("sys", "sysfs", flags, "")
	if err == nil || !errors.Is(err, unix.EPERM) {
		return err
	}
	return r.bind(srcs.sys, "sys", !cfg.Privileged, true)
}

// pivot switches to the new root with pivot_root(".", "."), which stacks
// the old root on top of the new one at "/", so a lazy unmount of "."
// removes it without needing a directory for it. The old root becomes a
// slave first so the unmount cannot propagate to any peer. On a ramfs or
// initramfs root pivot_root fails with EINVAL; there the root is moved over
// "/" and chrooted into instead.
func pivot(r *root) error {
	if err := unix.Fchdir(r.fd); err != nil {
		return fmt.Errorf("entering new root: %w", err)
	}
	err := unix.PivotRoot(".", ".")
	if errors.Is(err, unix.EINVAL) {
		return moveRoot(r)
	}
	if err != nil {
		return &os.PathError{Op: "pivot_root", Path: r.path, Err: err}
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making the old root a slave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering new root: %w", err)
	}
	return nil
}

func moveRoot(r *root) error {
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving %s over /: %w", r.path, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into %s: %w", r.path, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("entering new root: %w", err)
	}
	return nil
}

// containerPath turns a path inside the root into the form used in errors.
func containerPath(rel string) string { return filepath.Join("/", rel) }
