package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MaskedPaths are hidden from a container: files under /dev/null, directories
// under an empty read-only tmpfs. This is runc's default list plus what
// Docker masks after GHSA-6fw5-f8r9-fgfm and GHSA-jq35-85cj-fj4p (interrupt
// counts, power and thermal counters usable as side channels). Entries may
// be glob patterns.
var MaskedPaths = []string{
	"/proc/acpi",
	"/proc/asound",
	"/proc/interrupts",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/sys/devices/system/cpu/cpu*/thermal_throttle",
	"/sys/devices/virtual/powercap",
	"/sys/firmware",
}

// ReadonlyPaths stay visible but read-only: writing there changes the host
// kernel (/proc/sys outside the namespaced keys, /proc/sysrq-trigger) or
// its hardware view.
var ReadonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

// Harden runs after Setup, inside the new root, once the sysctls have been
// written: it makes ReadonlyPaths read-only, masks MaskedPaths, makes the
// /dev tmpfs read-only (the device nodes stay usable; no new node can be
// added) and, with cfg.ReadOnly, makes / read-only. Privileged containers
// skip everything but the read-only root.
func Harden(cfg Config) error {
	if !cfg.Privileged {
		for _, p := range ReadonlyPaths {
			if err := readonly(p); err != nil {
				return err
			}
		}
		if err := maskAll(); err != nil {
			return err
		}
		if err := setAttrPath("/dev", unix.MOUNT_ATTR_RDONLY, false); err != nil {
			return fmt.Errorf("making /dev read-only: %w", err)
		}
	}
	if cfg.ReadOnly {
		if err := setAttrPath("/", unix.MOUNT_ATTR_RDONLY, false); err != nil {
			return fmt.Errorf("making / read-only: %w", err)
		}
	}
	return nil
}

// maskAll masks what MaskedPaths name. mask skips a missing path itself,
// so a literal entry needs no lookup of its own.
func maskAll() error {
	for _, pattern := range MaskedPaths {
		paths := []string{pattern}
		if hasMeta(pattern) {
			var err error
			if paths, err = glob(pattern); err != nil {
				return fmt.Errorf("masked path pattern %q: %w", pattern, err)
			}
		}
		for _, p := range paths {
			if err := mask(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// glob is filepath.Glob for patterns whose last element is a literal, like
// /sys/devices/system/cpu/cpu*/thermal_throttle: it looks that element up
// in each directory matched instead of listing the directory, which on a
// host with many CPUs saves hundreds of system calls per container.
func glob(pattern string) ([]string, error) {
	dir, file := filepath.Split(pattern)
	if hasMeta(file) || !hasMeta(dir) {
		return filepath.Glob(pattern)
	}
	dirs, err := filepath.Glob(filepath.Clean(dir))
	if err != nil {
		return nil, err
	}
	var matches []string
	for _, d := range dirs {
		p := filepath.Join(d, file)
		if _, err := os.Lstat(p); err == nil {
			matches = append(matches, p)
		}
	}
	return matches, nil
}

// hasMeta reports whether path holds a filepath.Match metacharacter.
func hasMeta(path string) bool {
	return strings.ContainsAny(path, `*?[\`)
}

func readonly(p string) error {
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding %s onto itself: %w", p, err)
	}
	if err := setAttrPath(p, unix.MOUNT_ATTR_RDONLY, true); err != nil {
		return fmt.Errorf("making %s read-only: %w", p, err)
	}
	return nil
}

func mask(p string) error {
	st, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", p, err)
	}
	if st.IsDir() {
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=755")
	} else {
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("masking %s: %w", p, err)
	}
	return nil
}

func setAttrPath(p string, attr uint64, recursive bool) error {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return setAttr(fd, attr, recursive)
}
