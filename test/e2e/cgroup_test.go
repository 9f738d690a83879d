package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hierarchy is one mounted cgroup hierarchy and the test process's cgroup in it.
type hierarchy struct {
	Key   string // its controllers as /proc/PID/cgroup names them: "memory", "" for cgroup v2
	Mount string // e.g. /sys/fs/cgroup/memory
	Own   string // our cgroup inside it, e.g. /process_api/<id> or /
}

// cgroupScope is where a scenario's runtimes must put container cgroups: a directory named
// Name below the test process's own cgroup, in every hierarchy. Runtimes are given Name as a
// relative path, which runc resolves against its own cgroup (the daemon's, which is ours), so
// nothing here moves a process between cgroups.
type cgroupScope struct {
	Name   string
	hier   []hierarchy
	before map[string]bool
}

// newCgroupScope records every cgroup directory that exists now and, when the test ends, kills
// the processes left in directories the scenario caused, removes those directories (deepest
// first) and fails the test when one was made outside the scope.
func newCgroupScope(t *testing.T) *cgroupScope {
	t.Helper()
	hier, err := ownHierarchies()
	if err != nil {
		t.Fatalf("finding our cgroups: %v", err)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	c := &cgroupScope{Name: "nsnet-e2e-" + hex.EncodeToString(b), hier: hier, before: map[string]bool{}}
	for _, d := range c.walk() {
		c.before[d] = true
	}
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

// root is the scope's directory in hierarchy h, relative to its mount.
func (c *cgroupScope) root(h hierarchy) string { return filepath.Join(h.Own, c.Name) }

// walk lists every cgroup directory of every hierarchy.
func (c *cgroupScope) walk() []string {
	var out []string
	for _, h := range c.hier {
		_ = filepath.WalkDir(h.Mount, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// runtimeCgroup matches the cgroup names container runtimes make on their own: container and
// sandbox IDs, podman's and conmon's, containerd's namespaces, Kubernetes' and systemd's
// slices. A new directory with such a name outside the scope is one our runtimes were not
// supposed to make; other new directories belong to other processes on the machine.
var runtimeCgroup = regexp.MustCompile(`[0-9a-f]{64}|libpod|conmon|k8s\.io|/default(/|$)|kubepods|machine\.slice`)

// created returns the directories that appeared since the scope was made, split into those
// inside the scope (or intermediate directories leading to it below our own cgroup) and those
// outside that a runtime of ours could have made.
func (c *cgroupScope) created() (inside, outside []string) {
	for _, d := range c.walk() {
		if c.before[d] {
			continue
		}
		ok, suspect := false, false
		for _, h := range c.hier {
			if !strings.HasPrefix(d, h.Mount+"/") {
				continue
			}
			rel := strings.TrimPrefix(d, h.Mount)
			root := c.root(h)
			own := filepath.Clean(h.Own)
			switch {
			case rel == root || strings.HasPrefix(rel, root+"/"):
				ok = true
			case strings.HasPrefix(root, rel+"/") && (own == "/" || strings.HasPrefix(rel, own+"/")):
				ok = true
			case strings.Contains(rel, c.Name):
				suspect = true
			case strings.Contains(rel, "nsnet-e2e-"):
				// Another test run's scope.
			default:
				suspect = runtimeCgroup.MatchString(rel)
			}
		}
		switch {
		case ok:
			inside = append(inside, d)
		case suspect:
			outside = append(outside, d)
		}
	}
	return inside, outside
}

func (c *cgroupScope) cleanup(t *testing.T) {
	inside, outside := c.created()
	if len(outside) > 0 {
		t.Errorf("cgroups created outside our own cgroup %v:\n  %s", c.hier, strings.Join(outside, "\n  "))
	}
	// Those named after the scope are certainly ours to remove; the others are only reported.
	for _, d := range outside {
		if strings.Contains(d, c.Name) {
			inside = append(inside, d)
		}
	}
	if len(inside) > 0 {
		t.Logf("removing the %d cgroup directories the runtimes made below our own cgroup (%s in every hierarchy)", len(inside), c.Name)
	}
	// Deepest first: a cgroup directory can only go once its children are gone.
	sort.Slice(inside, func(i, j int) bool { return strings.Count(inside[i], "/") > strings.Count(inside[j], "/") })
	for _, d := range inside {
		if pids := cgroupProcs(d); len(pids) > 0 {
			t.Errorf("processes %v still in %s after the runtime removed its containers; killing them", pids, d)
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		err := waitFor(5*time.Second, func() error {
			err := syscall.Rmdir(d)
			if err == syscall.ENOENT {
				return nil
			}
			return err
		})
		if err != nil {
			t.Errorf("removing cgroup %s: %v", d, err)
		}
	}
}

func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ownHierarchies pairs every cgroup hierarchy mounted in our mount namespace with our cgroup in
// it, from /proc/self/cgroup and /proc/self/mountinfo.
func ownHierarchies() ([]hierarchy, error) {
	own, err := procCgroups("self")
	if err != nil {
		return nil, err
	}
	mounts, err := ownMounts()
	if err != nil {
		return nil, err
	}
	var out []hierarchy
	for _, m := range mounts {
		switch m.fstype {
		case "cgroup2":
			if p, ok := own[""]; ok {
				out = append(out, hierarchy{Key: "", Mount: m.point, Own: p})
			}
		case "cgroup":
			opts := strings.Split(m.superOpts, ",")
			for ctrls, p := range own {
				if ctrls != "" && allIn(strings.Split(ctrls, ","), opts) {
					out = append(out, hierarchy{Key: ctrls, Mount: m.point, Own: p})
					break
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy mounted")
	}
	return out, nil
}

// allIn reports whether every one of items is in set.
func allIn(items, set []string) bool {
	for _, it := range items {
		if !slices.Contains(set, it) {
			return false
		}
	}
	return true
}

// checkProcess fails the test unless process pid (a container's) is inside the scope in every
// hierarchy.
func (c *cgroupScope) checkProcess(t *testing.T, pid int) {
	t.Helper()
	paths, err := procCgroups(pid)
	if err != nil {
		t.Errorf("reading the cgroups of container process %d: %v", pid, err)
		return
	}
	for _, h := range c.hier {
		root := c.root(h)
		if p := paths[h.Key]; p != root && !strings.HasPrefix(p, root+"/") {
			t.Errorf("container process %d is in cgroup %q of %s, outside %s", pid, p, h.Mount, root)
		}
	}
}

// procCgroups maps the controller list of each hierarchy ("memory", "name=systemd", "" for
// cgroup v2) to the cgroup of process pid in it ("self" for the caller).
func procCgroups(pid any) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%v/cgroup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, nil
}
