package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// hostDirs are the host directories the embedded default root shows,
// read-only. On merged-/usr systems /bin, /sbin and /lib* are symlinks into
// /usr and are recreated as such.
var hostDirs = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"}

// scratchDirs are where the default root's tmpfs may be mounted in the
// setup child's private mount namespace: the first that exists is used.
// What it covers is never needed again, because all bind sources are
// opened beforehand, and it is gone from view after pivot_root.
var scratchDirs = []string{"/tmp", "/mnt", "/run", "/dev"}

// buildDefaultRoot mounts a tmpfs and fills it with read-only binds of the
// host's system directories, so a command runs with the host's binaries but
// cannot change them and sees none of the host's other files.
func buildDefaultRoot() (*root, error) {
	var scratch string
	for _, d := range scratchDirs {
		if st, err := os.Lstat(d); err == nil && st.IsDir() {
			scratch = d
			break
		}
	}
	if scratch == "" {
		return nil, fmt.Errorf("no directory to build the default root in (tried %v)", scratchDirs)
	}
	if err := unix.Mount("tmpfs", scratch, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755,size=65536k"); err != nil {
		return nil, fmt.Errorf("mounting the default root's tmpfs on %s: %w", scratch, err)
	}
	r, err := openRoot(scratch)
	if err != nil {
		return nil, err
	}
	if err := populateDefaultRoot(r); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func populateDefaultRoot(r *root) error {
	for _, name := range hostDirs {
		host := "/" + name
		st, err := os.Lstat(host)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("inspecting host %s: %w", host, err)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(host)
			if err != nil {
				return fmt.Errorf("reading host %s: %w", host, err)
			}
			if err := unix.Symlinkat(target, r.fd, name); err != nil {
				return fmt.Errorf("creating %s: %w", host, err)
			}
			continue
		}
		if !st.IsDir() {
			continue
		}
		src, err := os.OpenFile(host, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening host %s: %w", host, err)
		}
		err = r.bind(src, name, true, true)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(r.fd, "root", 0o700); err != nil {
		return fmt.Errorf("creating /root: %w", err)
	}
	return nil
}
