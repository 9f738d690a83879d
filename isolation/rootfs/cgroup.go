package rootfs

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Cgroups says which cgroup hierarchies a container sees at
// /sys/fs/cgroup. The zero value mounts none, leaving the empty directory
// sysfs has there.
//
// The mounts are made from inside the container's cgroup namespace, so the
// root of each is the cgroup the container was in when the namespace was
// made: its own.
type Cgroups struct {
	// V2 mounts the unified hierarchy (cgroup2) at /sys/fs/cgroup.
	V2 bool
	// V1 are controller hierarchies and named ones (name=systemd),
	// mounted each on a directory of a tmpfs at /sys/fs/cgroup.
	V1 []CgroupV1
}

// CgroupV1 is one cgroup v1 hierarchy.
type CgroupV1 struct {
	// Dir is the name of its directory in /sys/fs/cgroup, as on the host
	// ("memory", "cpu,cpuacct"): one path element.
	Dir string
	// Controllers are the controllers bound to it, all of them: the
	// kernel refuses a mount that names only some.
	Controllers []string
	// Name is a named hierarchy's name ("systemd"), which has no
	// controllers; it is mounted with "none,name=NAME".
	Name string
}

// options are the mount options that select h.
func (h CgroupV1) options() string {
	if h.Name != "" {
		return "none,name=" + h.Name
	}
	return strings.Join(h.Controllers, ",")
}

// cgroupLink is a symlink in /sys/fs/cgroup: Name leads to Target.
type cgroupLink struct{ Name, Target string }

// cgroupLinks are the symlinks that name each controller of a co-mounted
// hierarchy ("cpu" → "cpu,cpuacct"), as Docker and systemd make them, so
// a program that looks a controller up by its name finds it. A name taken
// by a hierarchy's directory, or by an earlier link, is left alone.
func cgroupLinks(hs []CgroupV1) []cgroupLink {
	taken := make(map[string]bool, len(hs))
	for _, h := range hs {
		taken[h.Dir] = true
	}
	var links []cgroupLink
	for _, h := range hs {
		for _, c := range h.Controllers {
			if taken[c] {
				continue
			}
			taken[c] = true
			links = append(links, cgroupLink{Name: c, Target: h.Dir})
		}
	}
	return links
}

// cgroupMountFlags are those of every cgroup mount: read-only unless the
// container is privileged (as runc does), which may then manage its own
// subtree.
func cgroupMountFlags(privileged bool) uintptr {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !privileged {
		flags |= unix.MS_RDONLY
	}
	return flags
}

// mountCgroups mounts what cfg.Cgroups names at sys/fs/cgroup, which must
// be mounted already (sysfs, or the host's /sys bound).
//
// In a user namespace the kernel lets the owner of the cgroup namespace
// mount existing hierarchies, v1 ones too; where it refuses (EPERM: an
// older kernel, a security module), the container runs without them.
func mountCgroups(r *root, cfg Config) error {
	cg := cfg.Cgroups
	flags := cgroupMountFlags(cfg.Privileged)
	refused := func(err error) bool { return cfg.UserNS && errors.Is(err, unix.EPERM) }
	if cg.V2 {
		err := r.mountNew("sys/fs/cgroup", "cgroup2", flags, "")
		if refused(err) {
			return nil
		}
		return err
	}
	if len(cg.V1) == 0 {
		return nil
	}
	if err := r.mountNew("sys/fs/cgroup", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return err
	}
	// The tmpfs is new and empty: nothing in it can be a symlink, so its
	// entries are made relative to its root directly.
	dir, err := r.open("sys/fs/cgroup", dirFlags, inRoot|noSymlink)
	if err != nil {
		return fmt.Errorf("opening /sys/fs/cgroup: %w", err)
	}
	defer unix.Close(dir)
	for _, h := range cg.V1 {
		err := mountCgroupV1(dir, h, flags)
		if refused(err) {
			// The tmpfs goes with the hierarchies mounted so far.
			if err := unix.Unmount(fdPath(dir), unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmounting /sys/fs/cgroup: %w", err)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
	for _, l := range cgroupLinks(cg.V1) {
		if err := unix.Symlinkat(l.Target, dir, l.Name); err != nil {
			return fmt.Errorf("creating /sys/fs/cgroup/%s: %w", l.Name, err)
		}
	}
	if cfg.Privileged {
		return nil
	}
	if err := setAttr(dir, unix.MOUNT_ATTR_RDONLY, false); err != nil {
		return fmt.Errorf("making /sys/fs/cgroup read-only: %w", err)
	}
	return nil
}

// mountCgroupV1 mounts hierarchy h on a new directory of dir. The
// directory is named through dir's descriptor: nothing but this process
// has reached the new tmpfs, so no symlink can be in the way, and the
// open a mountNew would make is saved.
func mountCgroupV1(dir int, h CgroupV1, flags uintptr) error {
	if err := unix.Mkdirat(dir, h.Dir, 0o755); err != nil {
		return fmt.Errorf("creating /sys/fs/cgroup/%s: %w", h.Dir, err)
	}
	ctrl := h.options()
	if err := unix.Mount("cgroup", fdPath(dir)+"/"+h.Dir, "cgroup", flags, ctrl); err != nil {
		return fmt.Errorf("mounting cgroup %s on /sys/fs/cgroup/%s: %w", ctrl, h.Dir, err)
	}
	return nil
}
