package cgroups

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeDirs mimics cgroupfs on a temp dir: mkdir fills the directory with
// control files, rmdir removes them and refuses a directory with children.
type fakeDirs struct {
	files map[string]string
}

func (f fakeDirs) Mkdir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	return populate(dir, f.files)
}

func (f fakeDirs) Rmdir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			return &os.PathError{Op: "rmdir", Path: dir, Err: unix.EBUSY}
		}
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(dir)
}

func populate(dir string, files map[string]string) error {
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// v1Files is what a new v1 cgroup directory holds (the union over the
// controllers; each test only looks at its own hierarchy's files).
var v1Files = map[string]string{
	"cgroup.procs": "", "tasks": "", "cgroup.clone_children": "0", "cpuset.cpus": "", "cpuset.mems": "",
	"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes": "9223372036854771712",
	"memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
	"cpu.shares": "1024", "cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1",
	"cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n", "cpuacct.usage": "0",
	"pids.max": "max", "pids.current": "0", "blkio.weight": "500",
	"blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
	"freezer.state": "THAWED",
}

var v2Files = map[string]string{
	"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.controllers": "", "cgroup.freeze": "0",
	"cgroup.events": "populated 0\nfrozen 0\n",
	"cpuset.cpus":   "", "cpuset.mems": "", "memory.max": "max", "memory.swap.max": "max",
	"memory.current": "0", "memory.peak": "0", "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
	"cpu.weight": "100", "cpu.max": "max 100000", "cpu.stat": "usage_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
	"pids.max": "max", "pids.current": "0", "io.weight": "default 100", "io.max": "",
}

// hybridMountinfo is this machine's layout: v1 controllers, cpu and cpuacct
// apart, a name=systemd hierarchy and an empty v2 mount.
const hybridMountinfo = `24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridSelf = `9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`

const unifiedMountinfo = `22 1 0:21 / /proc rw - proc proc rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

const unifiedSelf = "0::/user.slice/session-1.scope\n"

func mustDetect(t *testing.T, mi, self string) Layout {
	t.Helper()
	l, err := Detect(strings.NewReader(mi), strings.NewReader(self))
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	return l
}

// fakeV1 builds the hybrid host's tree under a temp dir, with the caller's
// own cgroup in every hierarchy.
func fakeV1(t *testing.T) (Layout, string) {
	t.Helper()
	l := mustDetect(t, hybridMountinfo, hybridSelf)
	prefix := t.TempDir()
	for _, h := range l.V1 {
		root := prefix + h.Mountpoint
		own, err := h.dir(prefix, h.Own)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{root, own} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{}
			for k, v := range v1Files {
				files[k] = v
			}
			files["cpuset.cpus"], files["cpuset.mems"] = "0-1", "0"
			if err := populate(d, files); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l, prefix
}

// fakeV2 builds a unified tree whose caller's cgroup delegates subtree.
func fakeV2(t *testing.T, subtree string) (Layout, string, string) {
	t.Helper()
	l := mustDetect(t, unifiedMountinfo, unifiedSelf)
	prefix := t.TempDir()
	own, err := l.V2.dir(prefix, l.V2.Own)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for k, v := range v2Files {
		files[k] = v
	}
	files["cgroup.subtree_control"] = subtree
	if err := populate(own, files); err != nil {
		t.Fatal(err)
	}
	return l, prefix, own
}

func readT(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testHost() Host { return Host{NumCPU: 2} }

func dump(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() {
			fmt.Fprintln(&b, p)
		}
		return nil
	})
	return b.String()
}
