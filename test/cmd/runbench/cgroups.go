package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// cgroupLine is one line of /proc/PID/cgroup: hierarchy id, controllers and path.
type cgroupLine struct{ id, controllers, path string }

func parseCgroups(data string) ([]cgroupLine, error) {
	var out []cgroupLine
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("malformed cgroup line %q", line)
		}
		out = append(out, cgroupLine{parts[0], parts[1], parts[2]})
	}
	return out, nil
}

func ownCgroups() ([]cgroupLine, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	return parseCgroups(string(data))
}

// checkBelow verifies that every hierarchy of a container's /proc/self/cgroup (printed in
// the host's cgroup namespace) is strictly below ours.
func checkBelow(own []cgroupLine, containerCgroups string) error {
	theirs, err := parseCgroups(containerCgroups)
	if err != nil {
		return err
	}
	ours := map[string]string{}
	for _, l := range own {
		ours[l.id+":"+l.controllers] = l.path
	}
	for _, l := range theirs {
		base, ok := ours[l.id+":"+l.controllers]
		if !ok {
			return fmt.Errorf("hierarchy %s:%s unknown to us", l.id, l.controllers)
		}
		if !strings.HasPrefix(l.path, strings.TrimSuffix(base, "/")+"/") || l.path == base {
			return fmt.Errorf("hierarchy %s:%s: container in %s, we are in %s", l.id, l.controllers, l.path, base)
		}
	}
	return nil
}

// cgroupDirs returns, for every hierarchy of ours that is mounted, the directory of the
// child cgroup name below our own cgroup.
func cgroupDirs(own []cgroupLine, name string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, l := range own {
		mnt, err := hierarchyMount(string(data), l)
		if err != nil {
			return nil, err
		}
		if mnt != "" {
			dirs = append(dirs, filepath.Join(mnt, l.path, name))
		}
	}
	return dirs, nil
}

// hierarchyMount finds where the hierarchy of l is mounted with its root at the
// hierarchy's root; "" when it is not mounted.
func hierarchyMount(mountinfo string, l cgroupLine) (string, error) {
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(postFields) < 3 {
			continue
		}
		fsType, superOpts := postFields[0], strings.Split(postFields[2], ",")
		var match bool
		switch {
		case l.id == "0" && l.controllers == "":
			match = fsType == "cgroup2"
		case fsType == "cgroup":
			match = true
			for _, c := range strings.Split(l.controllers, ",") {
				match = match && containsString(superOpts, c)
			}
		}
		if !match {
			continue
		}
		if fields[3] != "/" {
			return "", fmt.Errorf("hierarchy %s:%s mounted at %s from %s, not its root", l.id, l.controllers, fields[4], fields[3])
		}
		return fields[4], nil
	}
	return "", nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// removeLeftovers removes the benchmark's cgroup directories a runtime failed to delete;
// finding one is an error all the same.
func removeLeftovers(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			continue
		}
		err := os.Remove(d)
		errs = append(errs, fmt.Errorf("cgroup %s was left behind (removing it: %v)", d, err))
	}
	return errors.Join(errs...)
}

// privateNSEnv marks the copy of the program that runs in its own mount namespace.
const privateNSEnv = "RUNBENCH_PRIVATE_MOUNT_NS"

func inPrivateMountNS() bool { return os.Getenv(privateNSEnv) == "1" }

// reexecInPrivateMountNS runs this program again in a new mount namespace (the go runtime
// makes its mounts private before the exec) and returns its exit code.
func reexecInPrivateMountNS() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbench: finding own executable:", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), privateNSEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "runbench: starting in a private mount namespace:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	if err := cmd.Wait(); err != nil && cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "runbench:", err)
		return 1
	}
	return cmd.ProcessState.ExitCode()
}

// unifiedControllers is the controller list of the cgroup v2 hierarchy of a hybrid host.
const unifiedControllers = "/sys/fs/cgroup/unified/cgroup.controllers"

// hideUnifiedControllers makes the hybrid host's v2 hierarchy look controller-less in this
// private mount namespace: crun refuses to start anything on a hybrid host whose v2
// hierarchy has controllers (here hugetlb), even with its cgroup manager disabled.
func hideUnifiedControllers() error {
	data, err := os.ReadFile(unifiedControllers)
	if errors.Is(err, os.ErrNotExist) || (err == nil && strings.TrimSpace(string(data)) == "") {
		return nil
	}
	if err != nil {
		return err
	}
	if !isPrivateMount(filepath.Dir(unifiedControllers)) {
		return errors.New("refusing to mount: the cgroup v2 mount is not private in this mount namespace")
	}
	if err := syscall.Mount(os.DevNull, unifiedControllers, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("hiding %s in the private mount namespace: %w", unifiedControllers, err)
	}
	return nil
}

// isPrivateMount reports whether every mount at dir propagates nothing (no shared: or
// master: tag in mountinfo).
func isPrivateMount(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		pre, _, ok := strings.Cut(line, " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 6 || path.Clean(fields[4]) != dir {
			continue
		}
		for _, opt := range fields[6:] {
			if strings.HasPrefix(opt, "shared:") || strings.HasPrefix(opt, "master:") {
				return false
			}
		}
		found = true
	}
	return found
}
