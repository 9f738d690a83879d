package test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/isolation/cgroups"
)

// cgroupEnv is an nsnetEnv whose containers get their cgroups under a
// parent unique to the test, so leftovers are easy to find.
type cgroupEnv struct {
	*nsnetEnv
	parent string
}

func newCgroupEnv(t *testing.T) *cgroupEnv {
	t.Helper()
	e := newNsnetEnv(t)
	hostLayout(t, os.Getpid())
	var b [4]byte
	_, _ = rand.Read(b[:])
	ce := &cgroupEnv{nsnetEnv: e, parent: "nsnet-cgtest-" + hex.EncodeToString(b[:])}
	t.Cleanup(func() {
		for _, d := range ce.dirsNamed(ce.parent) {
			t.Errorf("cgroup directory left behind: %s", d)
		}
	})
	return ce
}

// runArgs are the flags every container of the test gets.
func (e *cgroupEnv) runArgs(flags ...string) []string {
	return append([]string{"--cgroup-parent", e.parent}, flags...)
}

// hostLayout is the cgroup layout of this host with process pid's cgroup
// in each hierarchy as Own, read by isolation/cgroups.Detect (tested on its
// own against many mount tables).
func hostLayout(t testing.TB, pid int) cgroups.Layout {
	t.Helper()
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	cg, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	l, err := cgroups.Detect(mi, cg)
	if errors.Is(err, cgroups.ErrNoCgroups) {
		t.Skip("no cgroup hierarchy mounted")
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// hierarchies are the hierarchies nsnet puts containers in: the v1
// controllers' or the unified one.
func hierarchies(l cgroups.Layout) []cgroups.Hierarchy {
	if l.V2 != nil {
		return []cgroups.Hierarchy{*l.V2}
	}
	return l.V1
}

// hierarchyOf is the hierarchy of controller ("" for cgroup v2) as process
// pid sees it.
func hierarchyOf(t testing.TB, pid int, controller string) cgroups.Hierarchy {
	t.Helper()
	for _, h := range hierarchies(hostLayout(t, pid)) {
		if controller == "" && h.Controllers == nil || slices.Contains(h.Controllers, controller) {
			return h
		}
	}
	t.Skipf("no hierarchy with controller %q mounted", controller)
	return cgroups.Hierarchy{}
}

// dirsNamed finds directories called name in every hierarchy (three
// levels deep at most: the parent sits below the caller's own cgroup).
func (e *cgroupEnv) dirsNamed(name string) []string {
	var out []string
	for _, h := range hierarchies(hostLayout(e.t, os.Getpid())) {
		_ = filepath.WalkDir(h.Mountpoint, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if strings.Count(strings.TrimPrefix(p, h.Mountpoint), "/") > 4 {
				return filepath.SkipDir
			}
			if d.Name() == name {
				out = append(out, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return out
}

// ownCgroup is process pid's cgroup in the hierarchy of controller ("" for
// cgroup v2).
func ownCgroup(t testing.TB, pid int, controller string) string {
	t.Helper()
	return hierarchyOf(t, pid, controller).Own
}

// hostDir is the directory, seen from the host, of the cgroup process pid
// is in for controller ("" for cgroup v2).
func hostDir(t testing.TB, pid int, controller string) string {
	t.Helper()
	h := hierarchyOf(t, pid, controller)
	rel, ok := strings.CutPrefix(h.Own, h.Root)
	if !ok {
		t.Fatalf("cgroup %s of process %d is outside %s mounted at %s", h.Own, pid, h.Root, h.Mountpoint)
	}
	return filepath.Join(h.Mountpoint, rel)
}

// controllerFile returns the host path of a control file of the running
// container's cgroup: v1 "memory", "memory.limit_in_bytes" or, on a v2
// host, the v2 name given as v2File.
func (e *cgroupEnv) controllerFile(pid int, controller, v1File, v2File string) string {
	e.t.Helper()
	if unifiedHost(e.t) {
		return filepath.Join(hostDir(e.t, pid, ""), v2File)
	}
	return filepath.Join(hostDir(e.t, pid, controller), v1File)
}

// unifiedHost reports a pure cgroup v2 host.
func unifiedHost(t testing.TB) bool {
	return hostLayout(t, os.Getpid()).Mode == cgroups.ModeUnified
}

func readTrim(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// cpuUsage is the CPU time used by the container's cgroup, read on the
// host.
func (e *cgroupEnv) cpuUsage(pid int) time.Duration {
	e.t.Helper()
	if unifiedHost(e.t) {
		for _, l := range strings.Split(readTrim(e.t, filepath.Join(hostDir(e.t, pid, ""), "cpu.stat")), "\n") {
			if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return time.Duration(n) * time.Microsecond
			}
		}
		e.t.Fatal("cpu.stat has no usage_usec")
	}
	n, err := strconv.ParseInt(readTrim(e.t, filepath.Join(hostDir(e.t, pid, "cpuacct"), "cpuacct.usage")), 10, 64)
	if err != nil {
		e.t.Fatal(err)
	}
	return time.Duration(n)
}

func TestCgroupMemoryOOM(t *testing.T) {
	e := newCgroupEnv(t)
	// dd's buffer is the allocation: all of it is written while reading
	// /dev/zero into it.
	r := e.run(append(append([]string{"run", "--name", "oom", "--rootfs", e.rootfs}, e.runArgs("--memory", "32m")...),
		"--", "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")...)
	if r.code != 137 {
		t.Fatalf("128 MiB in a 32 MiB container: %s; want exit code 137", r)
	}
	var st struct {
		OOMKilled bool `json:"oomKilled"`
		ExitCode  *int `json:"exitCode"`
		Cgroup    *any `json:"cgroup"`
		Config    struct {
			Resources struct {
				Memory int64 `json:"Memory"`
			} `json:"resources"`
		} `json:"config"`
	}
	ir := e.run("inspect", "oom")
	e.mustSucceed(ir)
	if err := json.Unmarshal([]byte(ir.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if !st.OOMKilled || st.ExitCode == nil || *st.ExitCode != 137 {
		t.Errorf("inspect: oomKilled %v, exit code %v; want true and 137:\n%s", st.OOMKilled, st.ExitCode, ir.stdout)
	}
	if st.Cgroup != nil {
		t.Errorf("an exited container still records a cgroup:\n%s", ir.stdout)
	}
	if st.Config.Resources.Memory != 32<<20 {
		t.Errorf("recorded memory limit %d, want %d", st.Config.Resources.Memory, 32<<20)
	}
	e.mustSucceed(e.run("rm", "oom"))

	r = e.run(append(append([]string{"run", "--rm", "--rootfs", e.rootfs}, e.runArgs("--memory", "32m")...),
		"--", "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1")...)
	e.mustSucceed(r)
}

func TestCgroupPidsLimit(t *testing.T) {
	e := newCgroupEnv(t)
	// Forks sleeps in a subshell until the kernel refuses, then counts
	// the processes with shell builtins only: no fork is left. The init
	// and its threads count against the limit too.
	script := `( n=0; while [ $n -lt 50 ]; do sleep 30 & n=$((n+1)); done ) 2>/dev/null
		c=0; for p in /proc/[0-9]*; do c=$((c+1)); done; echo $c`
	r := e.sh(script, e.runArgs("--pids-limit", "20")...)
	e.mustSucceed(r)
	n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("output %q", r.stdout)
	}
	if n > 20 || n < 8 {
		t.Fatalf("%d processes in a container limited to 20 pids, want 8..20 (50 sleeps were forked)", n)
	}
}

func TestCgroupCPUQuota(t *testing.T) {
	e := newCgroupEnv(t)
	id := e.detach(e.runArgs("--cpus", "0.5", "--", "sh", "-c", "while :; do :; done & while :; do :; done")...)
	pid := e.inspect(id).Pid
	// The first period may run at full speed; measure after it.
	time.Sleep(300 * time.Millisecond)
	u0, t0 := e.cpuUsage(pid), time.Now()
	time.Sleep(3 * time.Second)
	used := float64(e.cpuUsage(pid)-u0) / float64(time.Since(t0))
	t.Logf("two busy loops under --cpus 0.5 used %.3f CPUs", used)
	if used < 0.4 || used > 0.6 {
		t.Fatalf("two busy loops under --cpus 0.5 used %.3f CPUs, want 0.4..0.6", used)
	}
}

func TestCgroupCpuset(t *testing.T) {
	e := newCgroupEnv(t)
	cpus := "0"
	if n := readTrim(t, "/sys/devices/system/cpu/online"); n != "0" {
		// Pinning to the last CPU proves more than the default would.
		cpus = n[strings.LastIndexAny(n, ",-")+1:]
	}
	r := e.sh(`grep Cpus_allowed_list /proc/self/status`, e.runArgs("--cpuset-cpus", cpus)...)
	e.mustSucceed(r)
	if f := strings.Fields(r.stdout); len(f) != 2 || f[1] != cpus {
		t.Fatalf("container runs on %q, want CPU %s", r.stdout, cpus)
	}
}

func TestCgroupPauseResume(t *testing.T) {
	e := newCgroupEnv(t)
	id := e.detach(e.runArgs("--", "sh", "-c", "while :; do :; done")...)
	pid := e.inspect(id).Pid
	e.mustSucceed(e.run("pause", id))
	if r := e.run("ps"); !strings.Contains(r.stdout, "paused") {
		t.Errorf("ps does not show the container paused:\n%s", r.stdout)
	}
	u0 := e.cpuUsage(pid)
	time.Sleep(500 * time.Millisecond)
	if d := e.cpuUsage(pid) - u0; d > 5*time.Millisecond {
		t.Fatalf("a paused container used %v of CPU in 500ms", d)
	}
	if r := e.run("pause", id); r.code == 0 {
		t.Errorf("pausing a paused container succeeded")
	}
	e.mustSucceed(e.run("resume", id))
	u0 = e.cpuUsage(pid)
	time.Sleep(500 * time.Millisecond)
	if d := e.cpuUsage(pid) - u0; d < 100*time.Millisecond {
		t.Fatalf("a resumed busy loop used only %v of CPU in 500ms", d)
	}
	// rm -f of a paused container must still work: frozen tasks cannot
	// act on SIGKILL until thawed.
	e.mustSucceed(e.run("pause", id))
	e.mustSucceed(e.run("rm", "-f", id))
}

func TestCgroupUpdateAndStats(t *testing.T) {
	e := newCgroupEnv(t)
	id := e.detach(e.runArgs("--memory", "64m", "--pids-limit", "100", "--", "sleep", "60")...)
	pid := e.inspect(id).Pid
	memFile := e.controllerFile(pid, "memory", "memory.limit_in_bytes", "memory.max")
	pidsFile := e.controllerFile(pid, "pids", "pids.max", "pids.max")
	if got := readTrim(t, memFile); got != strconv.Itoa(64<<20) {
		t.Fatalf("%s = %s, want %d", memFile, got, 64<<20)
	}
	e.mustSucceed(e.run("update", "--memory", "48m", "--pids-limit", "20", id))
	if got := readTrim(t, memFile); got != strconv.Itoa(48<<20) {
		t.Errorf("after update %s = %s, want %d", memFile, got, 48<<20)
	}
	if got := readTrim(t, pidsFile); got != "20" {
		t.Errorf("after update %s = %s, want 20", pidsFile, got)
	}
	if r := e.run("update", "--cpus", "1000", id); r.code != 125 || !strings.Contains(r.stderr, "CPUs") {
		t.Errorf("update --cpus 1000: %s; want exit 125 naming the CPUs", r)
	}

	r := e.run("stats", "--json", id)
	e.mustSucceed(r)
	var rows []struct {
		ID    string `json:"id"`
		Stats struct {
			Memory uint64 `json:"memory_usage"`
			Pids   uint64 `json:"pids"`
			CPU    uint64 `json:"cpu_usage_ns"`
		} `json:"stats"`
		Limit int64 `json:"memory_limit"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("stats --json: %v\n%s", err, r.stdout)
	}
	s := rows[0]
	if s.ID != id || s.Stats.Memory == 0 || s.Stats.Pids < 2 || s.Stats.CPU == 0 || s.Limit != 48<<20 {
		t.Errorf("stats %+v: want memory > 0, at least 2 tasks (init and sleep), CPU time > 0, limit 48 MiB", s)
	}
	if r := e.run("stats", id); r.code != 0 || !strings.Contains(r.stdout, "48.0MiB") {
		t.Errorf("stats table: %s", r)
	}
}

// TestCgroupPlacement checks the container's cgroup is below nsnet's own
// in every hierarchy, that the container sees it as its root (cgroup
// namespace), that exec'd commands join it, and that rm removes it.
func TestCgroupPlacement(t *testing.T) {
	e := newCgroupEnv(t)
	id := e.detach(e.runArgs("--", "sleep", "60")...)
	pid := e.inspect(id).Pid
	for _, h := range hierarchies(hostLayout(t, os.Getpid())) {
		ctrl := ""
		if h.Controllers != nil {
			ctrl = h.Controllers[0]
		}
		want := filepath.Join(h.Own, e.parent, id)
		if got := ownCgroup(t, pid, ctrl); got != want {
			t.Errorf("hierarchy %s: container in %s, want %s", h.Mountpoint, got, want)
		}
	}
	r := e.run("exec", id, "--", "cat", "/proc/self/cgroup")
	e.mustSucceed(r)
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.HasSuffix(l, ":/") {
			t.Errorf("exec'd command sees %q; want its cgroup as / (in the container's cgroup, through its namespace)", l)
		}
	}
	e.mustSucceed(e.run("rm", "-f", id))
	if left := e.dirsNamed(id); len(left) > 0 {
		t.Fatalf("cgroups left after rm: %v", left)
	}
}

// hasNamedSystemd reports a host whose processes are in a name=systemd
// hierarchy, read from /proc/self/cgroup without nsnet's detection.
func hasNamedSystemd(t testing.TB) bool {
	t.Helper()
	return strings.Contains(readTrim(t, "/proc/self/cgroup"), ":name=systemd:/")
}

// namedSystemd is the name=systemd hierarchy of a v1 host as process pid
// sees it; the test is skipped without one.
func namedSystemd(t testing.TB, pid int) cgroups.Hierarchy {
	t.Helper()
	if !hasNamedSystemd(t) {
		t.Skip("no name=systemd hierarchy (pure cgroup v2 host)")
	}
	for _, h := range hostLayout(t, pid).V1 {
		if h.Name == cgroups.NamedSystemd {
			return h
		}
	}
	t.Fatalf("process %d is in a name=systemd hierarchy, but the detected layout has none", pid)
	return cgroups.Hierarchy{}
}

// TestCgroupNamedSystemd: on a v1 host the container also gets a cgroup
// in the name=systemd hierarchy, below the test's own there, as runc and
// Docker make one. Its PID 1 and exec'd commands are in it, it sees it as
// / through its cgroup namespace and mounted read-only at
// /sys/fs/cgroup/systemd, and rm removes it.
func TestCgroupNamedSystemd(t *testing.T) {
	e := newCgroupEnv(t)
	h := namedSystemd(t, os.Getpid())
	id := e.detach(e.runArgs("--", "sleep", "60")...)
	pid := e.inspect(id).Pid
	want := filepath.Join(h.Own, e.parent, id)
	if got := namedSystemd(t, pid).Own; got != want {
		t.Errorf("PID 1 is in name=systemd:%s, want %s", got, want)
	}
	rel, ok := strings.CutPrefix(want, h.Root)
	if !ok {
		t.Fatalf("%s is outside %s mounted at %s", want, h.Root, h.Mountpoint)
	}
	dir := filepath.Join(h.Mountpoint, rel)
	if procs := strings.Fields(readTrim(t, filepath.Join(dir, "cgroup.procs"))); !slices.Contains(procs, strconv.Itoa(pid)) {
		t.Errorf("%s/cgroup.procs = %v, want PID 1 (%d) in it", dir, procs, pid)
	}

	script := `grep name=systemd /proc/self/cgroup | sed 's/^/self /'
		grep name=systemd /proc/1/cgroup | sed 's/^/init /'
		grep ' /sys/fs/cgroup/systemd ' /proc/self/mountinfo | sed 's/^/mountinfo /'
		if grep -qx $$ /sys/fs/cgroup/systemd/cgroup.procs; then echo member; fi
		if mkdir /sys/fs/cgroup/systemd/nsnet-probe 2>/dev/null; then echo writable; rmdir /sys/fs/cgroup/systemd/nsnet-probe; fi`
	r := e.run("exec", id, "--", "sh", "-c", script)
	e.mustSucceed(r)
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		kind, rest, _ := strings.Cut(line, " ")
		seen[kind] = true
		switch kind {
		case "self", "init":
			if _, path, _ := strings.Cut(rest, ":name=systemd:"); path != "/" {
				t.Errorf("%s: /proc/%s/cgroup has %q, want name=systemd:/ (the container's cgroup, through its namespace)", kind, kind, rest)
			}
		case "mountinfo":
			pre, post, _ := strings.Cut(rest, " - ")
			f, tail := strings.Fields(pre), strings.Fields(post)
			if len(f) < 6 || len(tail) < 3 {
				t.Fatalf("malformed mountinfo line %q", rest)
			}
			if f[3] != "/" || !strings.HasPrefix(f[5], "ro,") || tail[0] != "cgroup" || !slices.Contains(strings.Split(tail[2], ","), "name=systemd") {
				t.Errorf("/sys/fs/cgroup/systemd: %q, want a read-only name=systemd cgroup mount rooted at /", rest)
			}
		case "writable":
			t.Error("/sys/fs/cgroup/systemd is writable")
		}
	}
	for _, kind := range []string{"self", "init", "mountinfo", "member"} {
		if !seen[kind] {
			t.Errorf("no %q line: name=systemd missing from the container's cgroups or /sys/fs/cgroup/systemd not mounted holding the exec'd shell\n%s", kind, r.stdout)
		}
	}

	e.mustSucceed(e.run("rm", "-f", id))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after rm: %v, want it gone", dir, err)
	}
	if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("parent %s after rm: %v, want it gone", filepath.Dir(dir), err)
	}
}

// TestCgroupFilesystem: a container sees its own cgroup at /sys/fs/cgroup,
// read-only, as Docker's do: the hierarchies of the host (named as there,
// with a symlink per controller of a co-mounted one), each rooted at the
// cgroup /proc/self/cgroup names ("/", through the container's cgroup
// namespace), with the container's processes and limits in it.
func TestCgroupFilesystem(t *testing.T) {
	e := newCgroupEnv(t)
	l := hostLayout(t, os.Getpid())
	limit := "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	if l.Mode == cgroups.ModeUnified {
		limit = "/sys/fs/cgroup/memory.max"
	}
	// The write puts back the limit the container has, should it work.
	// On v1 a mkdir probes the tmpfs (on v2 it would make a cgroup).
	mkdir := ""
	if l.Mode != cgroups.ModeUnified {
		mkdir = `if mkdir /sys/fs/cgroup/nsnet-probe 2>/dev/null; then echo "mkdir allowed"; fi`
	}
	script := `echo "limit $(cat ` + limit + `)"
		if echo 67108864 2>/dev/null >` + limit + `; then echo "write allowed"; fi
		` + mkdir + `
		sed 's/^/cgroup /' /proc/self/cgroup
		grep ' /sys/fs/cgroup' /proc/self/mountinfo | sed 's/^/mountinfo /'
		for d in /sys/fs/cgroup /sys/fs/cgroup/*; do
			if [ -L $d ]; then echo "link ${d##*/} $(readlink $d)"
			elif [ -f $d/cgroup.procs ] && grep -qx $$ $d/cgroup.procs; then echo "member $d"; fi
		done`
	r := e.sh(script, e.runArgs("--memory", "64m")...)
	e.mustSucceed(r)
	type mount struct{ root, opts, fstype, super string }
	mounts := map[string]mount{}
	members, links := map[string]bool{}, map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		kind, rest, _ := strings.Cut(line, " ")
		switch kind {
		case "limit":
			if rest != strconv.Itoa(64<<20) {
				t.Errorf("%s = %q inside, want %d", limit, rest, 64<<20)
			}
		case "write", "mkdir":
			t.Errorf("%s: /sys/fs/cgroup is writable", line)
		case "cgroup":
			if !strings.HasSuffix(rest, ":/") {
				t.Errorf("/proc/self/cgroup has %q; want every cgroup to be the namespace's root, /", rest)
			}
		case "mountinfo":
			pre, post, _ := strings.Cut(rest, " - ")
			f, tail := strings.Fields(pre), strings.Fields(post)
			if len(f) < 6 || len(tail) < 1 {
				t.Fatalf("malformed mountinfo line %q", rest)
			}
			mounts[f[4]] = mount{root: f[3], opts: f[5], fstype: tail[0], super: tail[len(tail)-1]}
		case "member":
			members[rest] = true
		case "link":
			name, target, _ := strings.Cut(rest, " ")
			links[name] = target
		}
	}
	// Each cgroup mount is rooted at the container's cgroup and holds the
	// shell.
	checkCgroupMount := func(dir, fstype string) {
		t.Helper()
		m, ok := mounts[dir]
		switch {
		case !ok:
			t.Errorf("nothing mounted at %s; mounts %+v", dir, mounts)
		case m.fstype != fstype || m.root != "/":
			t.Errorf("%s: %s rooted at %s, want %s rooted at / (the container's cgroup)", dir, m.fstype, m.root, fstype)
		case !members[dir]:
			t.Errorf("%s/cgroup.procs does not list the container's shell", dir)
		}
	}
	for dir, m := range mounts {
		if !strings.HasPrefix(m.opts, "ro,") {
			t.Errorf("%s is mounted %s, want read-only", dir, m.opts)
		}
	}
	want := 1
	if l.Mode == cgroups.ModeUnified {
		checkCgroupMount("/sys/fs/cgroup", "cgroup2")
	} else {
		if m := mounts["/sys/fs/cgroup"]; m.fstype != "tmpfs" {
			t.Errorf("/sys/fs/cgroup is %q, want a tmpfs holding the v1 hierarchies", m.fstype)
		}
		for _, h := range l.V1 {
			dir := filepath.Base(h.Mountpoint)
			checkCgroupMount("/sys/fs/cgroup/"+dir, "cgroup")
			for _, c := range h.Controllers {
				if c != dir && links[c] != dir {
					t.Errorf("/sys/fs/cgroup/%s links to %q, want %s", c, links[c], dir)
				}
			}
		}
		want += len(l.V1)
		// Docker's containers have systemd's named hierarchy too.
		if hasNamedSystemd(t) {
			if m := mounts["/sys/fs/cgroup/systemd"]; !slices.Contains(strings.Split(m.super, ","), "name=systemd") {
				t.Errorf("/sys/fs/cgroup/systemd is %+v, want the name=systemd hierarchy", m)
			}
		}
	}
	if len(mounts) != want {
		t.Errorf("%d mounts at /sys/fs/cgroup, want %d: %+v", len(mounts), want, mounts)
	}

	// A privileged container may manage its cgroup: runc mounts it
	// writable then.
	r = e.sh(`grep ' /sys/fs/cgroup' /proc/self/mountinfo`, e.runArgs("--privileged")...)
	e.mustSucceed(r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	systemdRW := false
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "rw,") {
			t.Errorf("privileged container: %q, want the mount read-write", line)
		}
		systemdRW = systemdRW || len(f) >= 6 && f[4] == "/sys/fs/cgroup/systemd" && strings.HasPrefix(f[5], "rw,")
	}
	if l.Mode != cgroups.ModeUnified && hasNamedSystemd(t) && !systemdRW {
		t.Errorf("privileged container: no read-write /sys/fs/cgroup/systemd:\n%s", r.stdout)
	}
	if len(lines) != want {
		t.Errorf("privileged container: %d mounts at /sys/fs/cgroup, want %d:\n%s", len(lines), want, r.stdout)
	}

	// A user namespace owns its cgroup namespace, which lets it mount
	// the hierarchies (nsnet runs without them where the kernel refuses).
	r = e.sh(`cat `+limit+`; grep -c ' /sys/fs/cgroup' /proc/self/mountinfo`, e.runArgs("--userns", "--memory", "64m")...)
	e.mustSucceed(r)
	if got, w := strings.Fields(r.stdout), []string{strconv.Itoa(64 << 20), strconv.Itoa(want)}; !slices.Equal(got, w) {
		t.Errorf("--userns: limit and number of cgroup mounts %q, want %q", got, w)
	}
}

// TestCgroupKilledMonitor: the monitor of a limited container is killed;
// rm still removes the cgroup.
func TestCgroupKilledMonitor(t *testing.T) {
	e := newCgroupEnv(t)
	id := e.detach(e.runArgs("--memory", "64m", "--", "sleep", "60")...)
	st := e.inspect(id)
	p, err := os.FindProcess(st.Monitor)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	e.mustSucceed(e.run("rm", "-f", id))
	if left := e.dirsNamed(id); len(left) > 0 {
		t.Fatalf("cgroups left after rm: %v", left)
	}
}

func TestCgroupBadLimits(t *testing.T) {
	e := newCgroupEnv(t)
	for _, c := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--memory", "12x"}, "unit"},
		{[]string{"--memory", "1k"}, "6 MiB"},
		{[]string{"--memory", "-5m"}, "memory"},
		{[]string{"--cpus", "-3"}, "cpus"},
		{[]string{"--cpus", "1000"}, "CPUs of this machine"},
		{[]string{"--cpus", "abc"}, "not a number"},
		{[]string{"--cpuset-cpus", "0-999"}, "cpuset-cpus"},
		{[]string{"--pids-limit", "-7"}, "pids-limit"},
		{[]string{"--pids-limit", "5"}, "nsnet's init takes about"},
		{[]string{"--memory-swap", "64m"}, "memory-swap needs a memory limit"},
		{[]string{"--device-read-bps", "/dev/null:1mb"}, "not a block device"},
		{[]string{"--blkio-weight", "5"}, "blkio-weight"},
		{[]string{"--cgroup-parent", "../escape"}, ".."},
	} {
		r := e.sh("true", e.runArgs(c.flags...)...)
		if r.code != 125 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("run %v: %s; want exit 125 and an error with %q", c.flags, r, c.want)
		}
	}
}

func TestCgroupSysctls(t *testing.T) {
	e := newCgroupEnv(t)
	r := e.sh(`cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname`,
		e.runArgs("--sysctl", "kernel.shmmax=123456789", "--sysctl", "net.ipv4.ip_forward=1", "--sysctl", "kernel.domainname=nsnet.test")...)
	e.mustSucceed(r)
	if got := strings.Fields(r.stdout); len(got) != 3 || got[0] != "123456789" || got[1] != "1" || got[2] != "nsnet.test" {
		t.Errorf("sysctls inside: %q", r.stdout)
	}
	for _, kv := range []string{"kernel.panic=1", "vm.swappiness=10", "net.ipv4.ip_forward=1"} {
		flags := []string{"--sysctl", kv}
		if strings.HasPrefix(kv, "net.") {
			flags = append(flags, "--net", "host")
		}
		if r := e.sh("true", e.runArgs(flags...)...); r.code != 125 || !strings.Contains(r.stderr, strings.Split(kv, "=")[0]) {
			t.Errorf("--sysctl %s %v: %s; want exit 125 naming it", kv, flags[2:], r)
		}
	}
}

// TestCgroupDevices: a process in the container's cgroup cannot open a
// device outside the default allow-list; --device-cgroup-rule allows one.
// The probe opens the host's tun device: an unattached read answers
// EBADFD, which tells "opened" from "refused".
func TestCgroupDevices(t *testing.T) {
	e := newCgroupEnv(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no tun device to probe with: %v", err)
	}
	probe := func(flags ...string) string {
		id := e.detach(e.runArgs(append(flags, "--", "sleep", "60")...)...)
		out, _ := e.inCgroupOf(id, "cat /dev/net/tun")
		e.mustSucceed(e.run("rm", "-f", id))
		return out
	}
	if got := probe(); !strings.Contains(got, "Operation not permitted") {
		t.Errorf("default allow-list: opening tun said %q, want EPERM", got)
	}
	if got := probe("--device-cgroup-rule", "c 10:200 rwm"); !strings.Contains(got, "bad state") {
		t.Errorf("with c 10:200 allowed: opening tun said %q, want it opened (EBADFD on read)", got)
	}
	if got := probe("--privileged"); !strings.Contains(got, "bad state") {
		t.Errorf("privileged: opening tun said %q, want it opened", got)
	}
	if r := e.sh("true", e.runArgs("--device-cgroup-rule", "x 1:2 r")...); r.code != 125 {
		t.Errorf("bad rule: %s; want exit 125", r)
	}
}

// systemdHost reports systemd as PID 1 on a pure cgroup v2 host, where
// nsnet's default cgroup manager is systemd.
func systemdHost(t testing.TB) bool {
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return false
	}
	return unifiedHost(t)
}

// TestSystemdRun: with the systemd manager the container runs in a
// transient scope in machine.slice whose limits systemd knows, update
// changes them on both sides, OOM is reported, and rm stops the scope.
func TestSystemdRun(t *testing.T) {
	if !systemdHost(t) {
		t.Skip("needs systemd as PID 1 on a cgroup v2 host (make vmtest runs it in its systemd VM)")
	}
	e := newNsnetEnv(t)
	id := e.detach("--cgroup-manager", "systemd", "--memory", "64m", "--pids-limit", "50", "--", "sleep", "60")
	unit := "nsnet-" + id + ".scope"
	pid := e.inspect(id).Pid
	if got, want := ownCgroup(t, pid, ""), "/machine.slice/"+unit; got != want {
		t.Fatalf("container in %s, want %s", got, want)
	}
	show := func(prop string) string {
		out, _ := exec.Command("systemctl", "show", "-P", prop, unit).Output()
		return strings.TrimSpace(string(out))
	}
	if got := show("ActiveState"); got != "active" {
		t.Fatalf("%s is %q, want active", unit, got)
	}
	if got := show("MemoryMax"); got != strconv.Itoa(64<<20) {
		t.Errorf("systemd's MemoryMax %s, want %d", got, 64<<20)
	}
	// The scope is the root of the container's cgroup2 mount.
	if r := e.run("exec", id, "--", "cat", "/sys/fs/cgroup/memory.max"); r.code != 0 || strings.TrimSpace(r.stdout) != strconv.Itoa(64<<20) {
		t.Errorf("/sys/fs/cgroup/memory.max in the container: %s; want %d", r, 64<<20)
	}
	dir := hostDir(t, pid, "")
	e.mustSucceed(e.run("update", "--memory", "48m", id))
	if got := readTrim(t, filepath.Join(dir, "memory.max")); got != strconv.Itoa(48<<20) {
		t.Errorf("memory.max after update %s, want %d", got, 48<<20)
	}
	if got := show("MemoryMax"); got != strconv.Itoa(48<<20) {
		t.Errorf("systemd's MemoryMax after update %s, want %d", got, 48<<20)
	}
	e.mustSucceed(e.run("rm", "-f", id))
	if got := show("ActiveState"); got == "active" {
		t.Errorf("%s still active after rm", unit)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("scope directory %s left after rm (err %v)", dir, err)
	}

	r := e.run("run", "--rm", "--rootfs", e.rootfs, "--cgroup-manager", "systemd", "--memory", "32m",
		"--", "dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1")
	if r.code != 137 {
		t.Errorf("128 MiB in a 32 MiB scope: %s; want exit code 137", r)
	}
}

// vmDisk is the scratch block device make vmtest gives its VM.
func vmDisk(t *testing.T) string {
	d := os.Getenv("NSNET_VM_DISK")
	if d == "" {
		t.Skip("no scratch block device (NSNET_VM_DISK, set in make vmtest's VM)")
	}
	return d
}

// TestCgroupDeviceReadBps: reads from a block device are throttled.
func TestCgroupDeviceReadBps(t *testing.T) {
	disk := vmDisk(t)
	e := newCgroupEnv(t)
	// The device node is reachable only where volumes are not nodev.
	start := time.Now()
	r := e.sh(`dd if=/disk of=/dev/null bs=64k count=48 iflag=direct 2>&1`,
		e.runArgs("--privileged", "-v", disk+":/disk", "--device-read-bps", disk+":1mb")...)
	e.mustSucceed(r)
	// 3 MiB at 1 MiB/s; the throttle lets a first slice through at once.
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("3 MiB read at --device-read-bps 1mb took %v (%s)", d, r.stdout)
	}
}

// TestCgroupBlockDeviceDenied: a block device outside the allow-list
// cannot be opened from the container's cgroup.
func TestCgroupBlockDeviceDenied(t *testing.T) {
	disk := vmDisk(t)
	e := newCgroupEnv(t)
	id := e.detach(e.runArgs("--", "sleep", "60")...)
	out, err := e.inCgroupOf(id, "head -c 1 "+disk)
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("opening %s from the container's cgroup: %v, %q; want EPERM", disk, err, out)
	}
}

// inCgroupOf runs the shell command on the host in the devices cgroup (v2:
// the cgroup) of the running container id, and returns its output. Inside
// the container every writable mount is nodev, so device access is probed
// from a host process: it starts in the test's cgroup, is moved below it
// into the container's, then execs the command.
func (e *cgroupEnv) inCgroupOf(id, command string) (string, error) {
	e.t.Helper()
	procs := e.controllerFile(e.inspect(id).Pid, "devices", "cgroup.procs", "cgroup.procs")
	cmd := exec.Command("sh", "-c", "read go; exec "+command)
	in, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(procs, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		e.t.Fatalf("moving the probe into %s: %v", procs, err)
	}
	fmt.Fprintln(in, "go")
	err = cmd.Wait()
	return out.String(), err
}

// BenchmarkRunCgroupManager times nsnet run --rm -- /bin/true with each
// cgroup manager the host offers (systemd only where it is PID 1 on a v2
// host: make vmtest's systemd VM), for the ratio between them.
func BenchmarkRunCgroupManager(b *testing.B) {
	e := newNsnetEnv(b)
	managers := []string{"cgroupfs"}
	if systemdHost(b) {
		managers = append(managers, "systemd")
	}
	for _, m := range managers {
		b.Run(m, func(b *testing.B) {
			args := []string{"run", "--rm", "--rootfs", e.rootfs, "--cgroup-manager", m, "--", "/bin/true"}
			e.mustSucceed(e.run(args...))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := e.run(args...); r.code != 0 {
					b.Fatalf("nsnet run: %s", r)
				}
			}
		})
	}
}
