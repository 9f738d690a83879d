package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newV1Test(t *testing.T, r Resources) (Manager, Layout, string) {
	t.Helper()
	l, prefix := fakeV1(t)
	m, err := New(l, Config{ID: "c1", Resources: r, Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}})
	if err != nil {
		t.Fatal(err)
	}
	return m, l, prefix
}

// v1Leaf is the container's directory in a controller's hierarchy of the
// hybrid fixture (the memory one sits below the caller's /process_api/abc).
func v1Leaf(prefix, ctrl string) string {
	if ctrl == "memory" {
		return filepath.Join(prefix, "/sys/fs/cgroup/memory/process_api/abc/nsnet/c1")
	}
	return filepath.Join(prefix, "/sys/fs/cgroup", ctrl, "nsnet/c1")
}

func TestV1Limits(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Resources
		want map[string]string // "controller/file" -> content
	}{
		{"memory", Resources{Memory: 32 << 20}, map[string]string{"memory/memory.limit_in_bytes": "33554432", "memory/memory.memsw.limit_in_bytes": "9223372036854771712"}},
		{"memory and swap", Resources{Memory: 32 << 20, MemorySwap: 64 << 20},
			map[string]string{"memory/memory.limit_in_bytes": "33554432", "memory/memory.memsw.limit_in_bytes": "67108864"}},
		{"swap unlimited", Resources{Memory: 32 << 20, MemorySwap: Unlimited},
			map[string]string{"memory/memory.limit_in_bytes": "33554432", "memory/memory.memsw.limit_in_bytes": "-1"}},
		{"cpus", Resources{CPUs: 1.5}, map[string]string{"cpu/cpu.cfs_quota_us": "150000", "cpu/cpu.cfs_period_us": "100000"}},
		{"half cpu", Resources{CPUs: 0.5}, map[string]string{"cpu/cpu.cfs_quota_us": "50000"}},
		{"shares", Resources{CPUShares: 512}, map[string]string{"cpu/cpu.shares": "512", "cpu/cpu.cfs_quota_us": "-1"}},
		{"cpuset", Resources{CpusetCpus: "1", CpusetMems: "0"}, map[string]string{"cpuset/cpuset.cpus": "1", "cpuset/cpuset.mems": "0"}},
		{"cpuset copied from parent", Resources{}, map[string]string{"cpuset/cpuset.cpus": "0-1", "cpuset/cpuset.mems": "0"}},
		{"pids", Resources{PidsLimit: 20}, map[string]string{"pids/pids.max": "20"}},
		{"pids unlimited", Resources{PidsLimit: Unlimited}, map[string]string{"pids/pids.max": "max"}},
		{"blkio weight", Resources{BlkioWeight: 300}, map[string]string{"blkio/blkio.weight": "300"}},
		{"device bps", Resources{DeviceReadBps: []DeviceRate{{8, 0, 1 << 20}}, DeviceWriteBps: []DeviceRate{{8, 16, 2 << 20}}},
			map[string]string{"blkio/blkio.throttle.read_bps_device": "8:0 1048576", "blkio/blkio.throttle.write_bps_device": "8:16 2097152"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, prefix := newV1Test(t, tc.r)
			if err := m.Create(); err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.want {
				ctrl, file, _ := strings.Cut(k, "/")
				if got := readT(t, filepath.Join(v1Leaf(prefix, ctrl), file)); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestV1Lifecycle(t *testing.T) {
	m, l, prefix := newV1Test(t, Resources{Memory: 64 << 20})
	if m.Path() != "nsnet/c1" {
		t.Errorf("Path = %q", m.Path())
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(4242); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer"} {
		if got := readT(t, filepath.Join(v1Leaf(prefix, c), "cgroup.procs")); got != "4242" {
			t.Errorf("%s cgroup.procs = %q", c, got)
		}
	}
	if _, err := os.Stat(filepath.Join(prefix, "/sys/fs/cgroup/devices/nsnet")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("devices hierarchy touched: %v", err)
	}

	// A running container's limit changes; a bad one writes nothing.
	if err := m.Set(Resources{Memory: 128 << 20, CPUs: 0.5}); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(v1Leaf(prefix, "memory"), "memory.limit_in_bytes")); got != "134217728" {
		t.Errorf("memory after update = %q", got)
	}
	if err := m.Set(Resources{Memory: 256 << 20, CPUs: 3}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Set(cpus 3) = %v", err)
	}
	if got := readT(t, filepath.Join(v1Leaf(prefix, "memory"), "memory.limit_in_bytes")); got != "134217728" {
		t.Errorf("memory written despite invalid update: %q", got)
	}

	writeT(t, filepath.Join(v1Leaf(prefix, "memory"), "memory.usage_in_bytes"), "1000\n")
	writeT(t, filepath.Join(v1Leaf(prefix, "memory"), "memory.max_usage_in_bytes"), "2000\n")
	writeT(t, filepath.Join(v1Leaf(prefix, "memory"), "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	writeT(t, filepath.Join(v1Leaf(prefix, "cpuacct"), "cpuacct.usage"), "5000\n")
	writeT(t, filepath.Join(v1Leaf(prefix, "cpu"), "cpu.stat"), "nr_periods 10\nnr_throttled 4\nthrottled_time 777\n")
	writeT(t, filepath.Join(v1Leaf(prefix, "pids"), "pids.current"), "3\n")
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Stats{MemoryUsage: 1000, MemoryPeak: 2000, CPUUsage: 5000, Pids: 3, NrPeriods: 10, NrThrottled: 4, ThrottledTime: 777, OOMKills: 1}); s != want {
		t.Errorf("Stats = %+v\nwant %+v", s, want)
	}

	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(v1Leaf(prefix, "freezer"), "freezer.state")); got != "FROZEN" {
		t.Errorf("freezer.state = %q", got)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(v1Leaf(prefix, "freezer"), "freezer.state")); got != "THAWED" {
		t.Errorf("freezer.state = %q", got)
	}

	// nsnet rm runs in another process: a new Manager gets Created.
	m2, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}, Created: m.Created()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cpu", "memory", "freezer"} {
		if _, err := os.Stat(filepath.Dir(v1Leaf(prefix, c))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: nsnet parent left behind (%v)\n%s", c, err, dump(t, prefix))
		}
	}
	if _, err := os.Stat(filepath.Join(prefix, "/sys/fs/cgroup/memory/process_api/abc")); err != nil {
		t.Errorf("caller's own cgroup removed: %v", err)
	}
}

func TestV1DestroyKeepsForeignParent(t *testing.T) {
	l, prefix := fakeV1(t)
	// Another container's parent: exists before, has a sibling afterwards.
	pre := filepath.Join(prefix, "/sys/fs/cgroup/pids/nsnet")
	if err := (fakeDirs{v1Files}).Mkdir(pre); err != nil {
		t.Fatal(err)
	}
	m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Created() {
		if d == pre {
			t.Errorf("pre-existing %s recorded as created", d)
		}
	}
	sibling := filepath.Join(prefix, "/sys/fs/cgroup/cpu/nsnet/other")
	if err := (fakeDirs{v1Files}).Mkdir(sibling); err != nil {
		t.Fatal(err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{pre, sibling} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
	if _, err := os.Stat(v1Leaf(prefix, "pids")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leaf left: %v", err)
	}
}

func TestV1CreateRefusesExistingLeaf(t *testing.T) {
	l, prefix := fakeV1(t)
	other := v1Leaf(prefix, "memory")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); !errors.Is(err, ErrExists) {
		t.Fatalf("Create = %v, want ErrExists", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("existing cgroup removed: %v", err)
	}
}

func TestV1SwapWithoutAccounting(t *testing.T) {
	l, prefix := fakeV1(t)
	files := map[string]string{}
	for k, v := range v1Files {
		if k != "memory.memsw.limit_in_bytes" {
			files[k] = v
		}
	}
	m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{files},
		Resources: Resources{Memory: 32 << 20, MemorySwap: 64 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err == nil || !strings.Contains(err.Error(), "swapaccount") {
		t.Fatalf("Create = %v", err)
	}
	if _, err := os.Stat(filepath.Dir(v1Leaf(prefix, "memory"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Create left directories:\n%s", dump(t, prefix))
	}
}

func TestNewRejectsBeforeCreating(t *testing.T) {
	l, prefix := fakeV1(t)
	if _, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Resources: Resources{CPUs: 8}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("New = %v", err)
	}
	if _, err := os.Stat(filepath.Join(prefix, "/sys/fs/cgroup/cpu/nsnet")); !errors.Is(err, os.ErrNotExist) {
		t.Error("directory created for an invalid config")
	}
}

func writeT(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
