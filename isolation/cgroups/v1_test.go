package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// TestV1CreateRefusesExistingLeaf: a leaf that exists in any hierarchy,
// a controller's or name=systemd's, is another container's; Create fails
// and leaves it, and removes what it made itself.
func TestV1CreateRefusesExistingLeaf(t *testing.T) {
	for _, tc := range []struct {
		name             string
		existing, undone func(prefix string) string
	}{
		{"memory", func(p string) string { return v1Leaf(p, "memory") }, func(p string) string { return v1Leaf(p, "cpu") }},
		{"name=systemd", systemdLeaf, func(p string) string { return v1Leaf(p, "memory") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, prefix := fakeV1(t)
			if err := os.MkdirAll(tc.existing(prefix), 0o755); err != nil {
				t.Fatal(err)
			}
			m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Create(); !errors.Is(err, ErrExists) {
				t.Fatalf("Create = %v, want ErrExists", err)
			}
			if _, err := os.Stat(tc.existing(prefix)); err != nil {
				t.Errorf("existing cgroup removed: %v", err)
			}
			if _, err := os.Stat(tc.undone(prefix)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed Create left %s: %v", tc.undone(prefix), err)
			}
		})
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

// systemdLeaf is the container's directory in the fixture's name=systemd
// hierarchy, below the caller's own cgroup there (/).
func systemdLeaf(prefix string) string {
	return filepath.Join(prefix, "/sys/fs/cgroup/systemd/nsnet/c1")
}

// TestV1NamedSystemd: the container gets a cgroup in the name=systemd
// hierarchy like in the controllers' (below the caller's own, joined by
// Apply and by a thread that enters it through Entry's tasks files), and
// a later Manager removes it with the parent nsnet made.
func TestV1NamedSystemd(t *testing.T) {
	l, prefix := fakeV1(t)
	// The caller sits deeper in name=systemd than at its root.
	for i := range l.V1 {
		if l.V1[i].Name == NamedSystemd {
			l.V1[i].Own = "/user.slice/s.scope"
		}
	}
	own := filepath.Join(prefix, "/sys/fs/cgroup/systemd/user.slice/s.scope")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(own, "nsnet/c1")
	m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leaf); err != nil {
		t.Fatalf("no name=systemd cgroup: %v\n%s", err, dump(t, prefix))
	}
	if s := m.(Skipper).Skipped(); len(s) != 0 {
		t.Errorf("Skipped = %v", s)
	}
	tasks := m.(Entrant).Entry().Tasks
	if !slices.Contains(tasks, filepath.Join(leaf, "tasks")) {
		t.Errorf("Entry tasks %v lack %s", tasks, filepath.Join(leaf, "tasks"))
	}
	if len(tasks) != len(v1Used)+1 {
		t.Errorf("Entry tasks %v: want the %d used controllers' and name=systemd's", tasks, len(v1Used))
	}
	if err := m.Apply(4242); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "cgroup.procs")); got != "4242" {
		t.Errorf("name=systemd cgroup.procs = %q", got)
	}

	// nsnet exec and rm run in other processes.
	later := func() Manager {
		m2, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}, Created: m.Created()})
		if err != nil {
			t.Fatal(err)
		}
		return m2
	}
	if err := later().Apply(4343); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "cgroup.procs")); got != "4343" {
		t.Errorf("exec: name=systemd cgroup.procs = %q", got)
	}
	if err := later().Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(leaf)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("name=systemd cgroup or its nsnet parent left: %v\n%s", err, dump(t, prefix))
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("caller's own name=systemd cgroup removed: %v", err)
	}
}

func TestV1NamedSystemdAbsoluteParent(t *testing.T) {
	l, prefix := fakeV1(t)
	m, err := New(l, Config{ID: "c1", Parent: "/x", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v1Files}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(prefix, "/sys/fs/cgroup/systemd/x/c1")
	if _, err := os.Stat(leaf); err != nil {
		t.Fatalf("no name=systemd cgroup at %s: %v\n%s", leaf, err, dump(t, prefix))
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(leaf)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absolute parent left: %v", err)
	}
}

// refusingDirs is fakeDirs refusing to create anything below under, as
// a read-only or foreign hierarchy does.
type refusingDirs struct {
	fakeDirs
	under string
	err   error
}

func (r refusingDirs) Mkdir(dir string) error {
	if strings.HasPrefix(dir, r.under+"/") {
		return &os.PathError{Op: "mkdir", Path: dir, Err: r.err}
	}
	return r.fakeDirs.Mkdir(dir)
}

// TestV1NamedSystemdSkipped: a name=systemd hierarchy that cannot be
// written, or is gone, leaves the container without a cgroup there but
// running, and says why; one whose leaf exists (another container's) is an
// error as in the controllers' hierarchies.
func TestV1NamedSystemdSkipped(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(prefix string) DirOps
	}{
		{"read-only", func(prefix string) DirOps {
			return refusingDirs{fakeDirs{v1Files}, filepath.Join(prefix, "/sys/fs/cgroup/systemd"), unix.EROFS}
		}},
		{"permission", func(prefix string) DirOps {
			return refusingDirs{fakeDirs{v1Files}, filepath.Join(prefix, "/sys/fs/cgroup/systemd"), unix.EACCES}
		}},
		{"unmounted", func(prefix string) DirOps {
			if err := os.RemoveAll(filepath.Join(prefix, "/sys/fs/cgroup/systemd")); err != nil {
				t.Fatal(err)
			}
			return fakeDirs{v1Files}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, prefix := fakeV1(t)
			m, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: tc.setup(prefix), Resources: Resources{Memory: 64 << 20}})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Create(); err != nil {
				t.Fatalf("Create failed for the name=systemd hierarchy: %v", err)
			}
			skipped := m.(Skipper).Skipped()
			if len(skipped) != 1 || skipped[0].Mountpoint != "/sys/fs/cgroup/systemd" || skipped[0].Err == nil {
				t.Fatalf("Skipped = %+v, want name=systemd's with a reason", skipped)
			}
			t.Logf("reason: %v", skipped[0].Err)
			for _, task := range m.(Entrant).Entry().Tasks {
				if strings.Contains(task, "/systemd/") {
					t.Errorf("Entry names the skipped hierarchy: %s", task)
				}
			}
			if err := m.Apply(4242); err != nil {
				t.Errorf("Apply: %v", err)
			}
			if got := readT(t, filepath.Join(v1Leaf(prefix, "memory"), "memory.limit_in_bytes")); got != "67108864" {
				t.Errorf("memory limit %q", got)
			}
			if err := m.Destroy(); err != nil {
				t.Fatal(err)
			}
			if d := dump(t, prefix); strings.Contains(d, "nsnet") {
				t.Errorf("left behind:\n%s", d)
			}
		})
	}
}
