package guest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hogEnv makes the test binary a memory hog instead of running tests: it
// touches that many MiB of anonymous memory, printing its cgroup first.
const hogEnv = "NSNET_VMTEST_HOG_MIB"

func TestMain(m *testing.M) {
	if mib := os.Getenv(hogEnv); mib != "" {
		os.Exit(hog(mib))
	}
	os.Exit(m.Run())
}

func hog(mib string) int {
	n, err := strconv.Atoi(mib)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hog:", err)
		return 2
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	fmt.Printf("hog cgroup %s", self)
	var keep [][]byte
	for i := 0; i < n; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
	}
	fmt.Printf("hog survived with %d MiB\n", len(keep))
	return 0
}

const cgroupRoot = "/sys/fs/cgroup"

// inVM skips the test outside the test VM and returns the VM's mode
// ("busybox" or "systemd").
func inVM(t *testing.T) string {
	t.Helper()
	if os.Getenv("NSNET_IN_VM") != "1" {
		t.Skip("runs only inside the test VM (make vmtest sets NSNET_IN_VM=1): it changes the root cgroup")
	}
	return os.Getenv("NSNET_VM_MODE")
}

// limitsOn is false for the negative control (vmtest -negative), which must
// make the limit tests fail.
func limitsOn(t *testing.T) bool {
	if os.Getenv("NSNET_VM_NO_LIMITS") == "1" {
		t.Log("negative control: NSNET_VM_NO_LIMITS=1, no limit is set, so this test must fail")
		return false
	}
	return true
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func write(t *testing.T, p, v string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		t.Fatalf("writing %q to %s: %v", v, p, err)
	}
}

// keyed reads a flat-keyed cgroup file ("oom_kill 1") into a map.
func keyed(t *testing.T, p string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for line := range strings.Lines(readTrim(t, p)) {
		f := strings.Fields(line)
		if len(f) == 2 {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", p, strings.TrimSpace(line), err)
			}
			out[f[0]] = n
		}
	}
	return out
}

func TestCgroup2Hierarchy(t *testing.T) {
	mode := inVM(t)
	var fs unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Fatalf("%s has file system magic %#x, want cgroup2 (%#x)", cgroupRoot, fs.Type, unix.CGROUP2_SUPER_MAGIC)
	}
	mounts := readTrim(t, "/proc/self/mountinfo")
	if strings.Contains(mounts, " - cgroup ") {
		t.Errorf("a cgroup v1 hierarchy is mounted:\n%s", mounts)
	}
	want := []string{"cpu", "cpuset", "io", "memory", "pids"}
	have := strings.Fields(readTrim(t, cgroupRoot+"/cgroup.controllers"))
	enabled := strings.Fields(readTrim(t, cgroupRoot+"/cgroup.subtree_control"))
	for _, c := range want {
		if !slices.Contains(have, c) {
			t.Errorf("controller %s missing from the root's cgroup.controllers %v", c, have)
		}
		// systemd enables controllers for the root's children on demand.
		if mode == "busybox" && !slices.Contains(enabled, c) {
			t.Errorf("controller %s not enabled in the root's cgroup.subtree_control %v", c, enabled)
		}
	}
	if n := runtime.NumCPU(); n < 2 {
		t.Errorf("the guest has %d CPUs, want at least 2 for cpuset tests", n)
	}
}

func TestScratchDisk(t *testing.T) {
	inVM(t)
	disk, majmin := os.Getenv("NSNET_VM_DISK"), os.Getenv("NSNET_VM_DISK_MAJMIN")
	if disk == "" || majmin == "" {
		t.Fatal("NSNET_VM_DISK / NSNET_VM_DISK_MAJMIN not set: the runner found no scratch disk")
	}
	var st unix.Stat_t
	if err := unix.Stat(disk, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("%s is not a block device (mode %#o)", disk, st.Mode)
	}
	if got := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)); got != majmin {
		t.Fatalf("%s is %s, NSNET_VM_DISK_MAJMIN says %s", disk, got, majmin)
	}
}

// childCgroup makes a cgroup below the root for one test and removes it at
// the end, killing whatever is left in it. Under systemd the root belongs
// to systemd, so the test is skipped there.
func childCgroup(t *testing.T, mode string) string {
	t.Helper()
	if mode != "busybox" {
		t.Skip("systemd owns the cgroup tree here; TestSystemdScopeOOM covers limits under systemd")
	}
	dir := filepath.Join(cgroupRoot, fmt.Sprintf("nsnet-vmtest-%s-%d", strings.ToLower(t.Name()), os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("removing %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// startIn runs cmd as a member of the cgroup from its first instruction
// (clone3 with CLONE_INTO_CGROUP), waits for it and returns its status and
// output. The output goes to a file, not a pipe, so background processes
// it leaves behind cannot hold up the wait.
func startIn(t *testing.T, cgroup string, cmd *exec.Cmd) (syscall.WaitStatus, string) {
	t.Helper()
	fd, err := unix.Open(cgroup, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	out, err := os.CreateTemp(t.TempDir(), "output")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %v: %v", cmd.Args, err)
	}
	data, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus), string(data)
}

func status(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exit code %d", ws.ExitStatus())
}

func TestCgroup2MemoryOOM(t *testing.T) {
	dir := childCgroup(t, inVM(t))
	if limitsOn(t) {
		write(t, filepath.Join(dir, "memory.max"), "32M")
		write(t, filepath.Join(dir, "memory.swap.max"), "0")
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), hogEnv+"=64")
	ws, out := startIn(t, dir, cmd)
	t.Logf("hog: %s; output:\n%s", status(ws), out)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the 64 MiB hog in a 32M cgroup ended with %s, want killed by SIGKILL (exit 137)", status(ws))
	}
	events := keyed(t, filepath.Join(dir, "memory.events"))
	if events["oom_kill"] < 1 {
		t.Errorf("memory.events %v: want oom_kill >= 1", events)
	}
}

func TestCgroup2PidsLimit(t *testing.T) {
	dir := childCgroup(t, inVM(t))
	if limitsOn(t) {
		write(t, filepath.Join(dir, "pids.max"), "8")
	}
	script := `i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo all-started`
	ws, out := startIn(t, dir, exec.Command("/bin/sh", "-c", script))
	t.Logf("shell: %s; output:\n%s", status(ws), out)
	if strings.Contains(out, "all-started") {
		t.Errorf("20 background processes started in a cgroup with pids.max=8")
	}
	if events := keyed(t, filepath.Join(dir, "pids.events")); events["max"] < 1 {
		t.Errorf("pids.events %v: want max >= 1", events)
	}
}

func TestCgroup2IOMax(t *testing.T) {
	dir := childCgroup(t, inVM(t))
	majmin := os.Getenv("NSNET_VM_DISK_MAJMIN")
	if majmin == "" {
		t.Fatal("NSNET_VM_DISK_MAJMIN not set: the runner found no scratch disk")
	}
	write(t, filepath.Join(dir, "io.max"), majmin+" rbps=1048576 wiops=100")
	got := readTrim(t, filepath.Join(dir, "io.max"))
	if want := majmin + " rbps=1048576 wbps=max riops=max wiops=100"; got != want {
		t.Fatalf("io.max = %q, want %q", got, want)
	}
}

func TestSystemdBus(t *testing.T) {
	if inVM(t) != "systemd" {
		t.Skip("the VM runs busybox as init; vmtest -systemd boots systemd")
	}
	if comm := readTrim(t, "/proc/1/comm"); comm != "systemd" {
		t.Fatalf("PID 1 is %q, want systemd", comm)
	}
	out, err := exec.Command("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
		"org.freedesktop.DBus", "ListNames").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "org.freedesktop.systemd1") {
		t.Fatalf("busctl ListNames on the system bus: %v\n%s", err, out)
	}
	if out, err := exec.Command("systemd-run", "--quiet", "--scope", "true").CombinedOutput(); err != nil {
		t.Fatalf("systemd-run --scope true: %v\n%s", err, out)
	}
}

func TestSystemdScopeOOM(t *testing.T) {
	if inVM(t) != "systemd" {
		t.Skip("the VM runs busybox as init; vmtest -systemd boots systemd")
	}
	unit := fmt.Sprintf("nsnet-vmtest-oom-%d", os.Getpid())
	args := []string{"--quiet", "--scope", "--unit", unit, "-p", "TasksMax=64"}
	if limitsOn(t) {
		args = append(args, "-p", "MemoryMax=32M", "-p", "MemorySwapMax=0")
	}
	cmd := exec.Command("systemd-run", append(args, "--", os.Args[0])...)
	cmd.Env = append(os.Environ(), hogEnv+"=64")
	out, err := cmd.CombinedOutput()
	t.Logf("systemd-run: %v; output:\n%s", err, out)
	if !strings.Contains(string(out), "hog cgroup 0::/system.slice/"+unit+".scope") {
		t.Errorf("the hog did not run in %s.scope", unit)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the 64 MiB hog in a scope with MemoryMax=32M ended with %v, want killed by SIGKILL", err)
	}
}
