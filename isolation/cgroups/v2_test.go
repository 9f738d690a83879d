package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const allControllers = "cpuset cpu io memory pids"

func newV2Test(t *testing.T, subtree string, r Resources) (Manager, Layout, string, string) {
	t.Helper()
	l, prefix, own := fakeV2(t, subtree)
	m, err := New(l, Config{ID: "c1", Resources: r, Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v2Files}})
	if err != nil {
		t.Fatal(err)
	}
	return m, l, prefix, own
}

func TestV2Limits(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Resources
		want map[string]string
	}{
		{"memory", Resources{Memory: 32 << 20}, map[string]string{"memory.max": "33554432", "memory.swap.max": "max"}},
		{"memory and swap", Resources{Memory: 32 << 20, MemorySwap: 96 << 20}, map[string]string{"memory.max": "33554432", "memory.swap.max": "67108864"}},
		{"no swap", Resources{Memory: 32 << 20, MemorySwap: 32 << 20}, map[string]string{"memory.swap.max": "0"}},
		{"cpus", Resources{CPUs: 1.5}, map[string]string{"cpu.max": "150000 100000"}},
		{"shares", Resources{CPUShares: 1024}, map[string]string{"cpu.weight": "100"}},
		{"min shares", Resources{CPUShares: 2}, map[string]string{"cpu.weight": "1"}},
		{"cpuset", Resources{CpusetCpus: "0-1", CpusetMems: "0"}, map[string]string{"cpuset.cpus": "0-1", "cpuset.mems": "0"}},
		{"pids", Resources{PidsLimit: 20}, map[string]string{"pids.max": "20"}},
		{"blkio weight", Resources{BlkioWeight: 1000}, map[string]string{"io.weight": "default 10000"}},
		{"read bps", Resources{DeviceReadBps: []DeviceRate{{8, 0, 1 << 20}}}, map[string]string{"io.max": "8:0 rbps=1048576 wbps=max"}},
		{"read and write bps", Resources{DeviceReadBps: []DeviceRate{{8, 0, 1 << 20}}, DeviceWriteBps: []DeviceRate{{8, 0, 2 << 20}}},
			map[string]string{"io.max": "8:0 rbps=1048576 wbps=2097152"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _, own := newV2Test(t, allControllers, tc.r)
			if err := m.Create(); err != nil {
				t.Fatal(err)
			}
			for f, want := range tc.want {
				if got := readT(t, filepath.Join(own, "nsnet/c1", f)); got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
		})
	}
}

func TestIOMaxMerge(t *testing.T) {
	got := ioMax([]DeviceRate{{8, 0, 1}, {8, 16, 2}}, []DeviceRate{{8, 16, 3}, {259, 0, 4}})
	want := []string{"8:0 rbps=1 wbps=max", "8:16 rbps=2 wbps=3", "259:0 rbps=max wbps=4"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ioMax = %q, want %q", got, want)
	}
}

func TestV2BFQWeight(t *testing.T) {
	l, prefix, _ := fakeV2(t, allControllers)
	files := map[string]string{"io.bfq.weight": "default 100"}
	for k, v := range v2Files {
		files[k] = v
	}
	m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{files}, Resources: Resources{BlkioWeight: 300}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(prefix, "/sys/fs/cgroup/user.slice/session-1.scope/nsnet/c1")
	if got := readT(t, filepath.Join(leaf, "io.bfq.weight")); got != "300" {
		t.Errorf("io.bfq.weight = %q", got)
	}
}

func TestV2SubtreeControl(t *testing.T) {
	m, _, _, own := newV2Test(t, "cpu memory pids", Resources{Memory: 64 << 20})
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(own, "cgroup.subtree_control")); got != "cpu memory pids" {
		t.Errorf("caller's subtree_control changed: %q", got)
	}
	if got := readT(t, filepath.Join(own, "nsnet/cgroup.subtree_control")); got != "+cpu +memory +pids" {
		t.Errorf("nsnet subtree_control = %q", got)
	}
	if got := readT(t, filepath.Join(own, "nsnet/c1/cgroup.subtree_control")); got != "" {
		t.Errorf("leaf subtree_control written: %q (it holds the processes)", got)
	}
}

func TestV2UndelegatedController(t *testing.T) {
	m, _, _, own := newV2Test(t, "pids", Resources{Memory: 64 << 20})
	err := m.Create()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "memory controller is not delegated") {
		t.Fatalf("Create = %v", err)
	}
	if _, err := os.Stat(filepath.Join(own, "nsnet")); !errors.Is(err, os.ErrNotExist) {
		t.Error("directories created before the check")
	}
}

func TestV2Lifecycle(t *testing.T) {
	m, l, prefix, own := newV2Test(t, allControllers, Resources{PidsLimit: 10})
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(own, "nsnet/c1")
	if err := m.Apply(99); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "cgroup.procs")); got != "99" {
		t.Errorf("cgroup.procs = %q", got)
	}
	if err := m.Set(Resources{CPUs: Unlimited, Memory: Unlimited, PidsLimit: Unlimited}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"cpu.max": "max 100000", "memory.max": "max", "pids.max": "max"} {
		if got := readT(t, filepath.Join(leaf, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}

	writeT(t, filepath.Join(leaf, "memory.current"), "1000\n")
	writeT(t, filepath.Join(leaf, "memory.peak"), "2000\n")
	writeT(t, filepath.Join(leaf, "memory.events"), "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n")
	writeT(t, filepath.Join(leaf, "cpu.stat"), "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 10\nnr_throttled 4\nthrottled_usec 3\n")
	writeT(t, filepath.Join(leaf, "pids.current"), "3\n")
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{MemoryUsage: 1000, MemoryPeak: 2000, CPUUsage: 7000, Pids: 3, NrPeriods: 10, NrThrottled: 4, ThrottledTime: 3000, OOMKills: 2}); s != want {
		t.Errorf("Stats = %+v\nwant %+v", s, want)
	}
	if err := os.Remove(filepath.Join(leaf, "memory.peak")); err != nil { // kernels before 5.19
		t.Fatal(err)
	}
	if s, err := m.Stats(); err != nil || s.MemoryPeak != 0 {
		t.Errorf("Stats without memory.peak = %+v, %v", s, err)
	}

	// The kernel reports frozen in cgroup.events; the fake does it by hand.
	writeT(t, filepath.Join(leaf, "cgroup.events"), "populated 1\nfrozen 1\n")
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "cgroup.freeze")); got != "1" {
		t.Errorf("cgroup.freeze = %q", got)
	}
	writeT(t, filepath.Join(leaf, "cgroup.events"), "populated 1\nfrozen 0\n")
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "cgroup.freeze")); got != "0" {
		t.Errorf("cgroup.freeze = %q", got)
	}

	m2, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v2Files}, Created: m.Created()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(own, "nsnet")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nsnet left: %v", err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("own cgroup removed: %v", err)
	}
}

func TestV2AbsoluteParent(t *testing.T) {
	l, prefix, _ := fakeV2(t, allControllers)
	root := filepath.Join(prefix, "/sys/fs/cgroup")
	if err := populate(root, map[string]string{"cgroup.subtree_control": "cpu memory pids"}); err != nil {
		t.Fatal(err)
	}
	m, err := New(l, Config{ID: "c1", Parent: "/x", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v2Files}, Resources: Resources{Memory: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(root, "x/c1/memory.max")); got != "67108864" {
		t.Errorf("memory.max = %q", got)
	}
	if got := readT(t, filepath.Join(root, "cgroup.subtree_control")); got != "cpu memory pids" {
		t.Errorf("root subtree_control changed: %q", got)
	}
}

func TestDestroyKeepsForeignCreated(t *testing.T) {
	l, prefix, own := fakeV2(t, allControllers)
	m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v2Files}, Created: []string{own}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("own cgroup removed: %v", err)
	}
}
