package rootfs

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// devices are the only device nodes a container gets (the OCI default set
// without /dev/console, which belongs to a terminal).
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// devLinks are the conventional symlinks in /dev.
var devLinks = []struct{ name, target string }{
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
	{"core", "/proc/kcore"},
	{"ptmx", "pts/ptmx"},
}

// mountDev builds /dev on a tmpfs: the device nodes (made with mknod, or
// bound from the host's /dev inside a user namespace, where mknod is not
// allowed), a private devpts instance, /dev/shm, /dev/mqueue and the
// standard symlinks. Harden later makes the tmpfs itself read-only.
func mountDev(r *root, cfg Config, srcs *sources) error {
	if err := r.mountNew("dev", "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	dev, err := r.mkdirAll("dev", true)
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	for _, d := range devices {
		if cfg.UserNS {
			if err := r.bind(srcs.devices[d.name], filepath.Join("dev", d.name), false, false); err != nil {
				return err
			}
			continue
		}
		if err := unix.Mknodat(dev, d.name, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", d.name, err)
		}
		// mknod applies the umask; device nodes must be 0666 regardless.
		if err := unix.Fchmodat(dev, d.name, 0o666, 0); err != nil {
			return fmt.Errorf("setting mode of /dev/%s: %w", d.name, err)
		}
	}
	if cfg.Console {
		fd, err := r.mkfile("dev/console", true)
		if err != nil {
			return err
		}
		unix.Close(fd)
	}
	// gid=5 (tty) cannot be used when the group is not mapped.
	ptsData := "newinstance,ptmxmode=0666,mode=0620"
	if !cfg.UserNS {
		ptsData += ",gid=5"
	}
	for _, m := range []struct {
		dir, fstype string
		flags       uintptr
		data        string
	}{
		{"dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, ptsData},
		{"dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=65536k"},
	} {
		if err := r.mountNew(m.dir, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	// POSIX message queues are optional: some kernels lack mqueue.
	if err := r.mountNew("dev/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		_ = unix.Unlinkat(dev, "mqueue", unix.AT_REMOVEDIR)
	}
	for _, l := range devLinks {
		if err := unix.Symlinkat(l.target, dev, l.name); err != nil {
			return fmt.Errorf("creating /dev/%s: %w", l.name, err)
		}
	}
	return nil
}
