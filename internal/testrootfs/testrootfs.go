// Package testrootfs builds the small container root that tests and
// benchmarks run commands in, from Debian's busybox-static, and reads the
// mount table they compare before and after.
package testrootfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// ErrNoBusybox means busybox-static is not installed (make deps).
var ErrNoBusybox = errors.New("busybox not found: install busybox-static (make deps)")

// Busybox fills the existing directory dir with bin/busybox, one symlink
// per applet, the usual top-level directories, and empty /etc/hostname,
// hosts and resolv.conf: a container root mapped to an unprivileged host
// uid could not create these mount points in a root-owned tree itself.
func Busybox(dir string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return ErrNoBusybox
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "run", "tmp", "etc", "root", "mnt"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"hostname", "hosts", "resolv.conf"} {
		if err := os.WriteFile(filepath.Join(dir, "etc", f), nil, 0o644); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			return err
		}
	}
	return nil
}

// HostMounts returns the calling process's mount table, sorted, without
// mount IDs and without nsfs mounts, which other tests on the machine
// create and delete all the time.
func HostMounts() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.Contains(line, " - nsfs ") {
			continue
		}
		out = append(out, strings.Join(strings.Fields(line)[2:], " "))
	}
	slices.Sort(out)
	return out, nil
}
