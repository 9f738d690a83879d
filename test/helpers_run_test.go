package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/internal/testrootfs"
	"github.com/nsnet/nsnet/test/harness"
)

// nsnetEnv runs the built nsnet command against a temporary state root
// and a busybox-static rootfs made for the test.
type nsnetEnv struct {
	t      testing.TB
	bin    string
	state  string // NSNET_ROOT
	rootfs string
	// in, when set, runs every nsnet invocation in a netns (Host.Do), and
	// env is added to their environment.
	in  func(func() error) error
	env []string
}

// result is what one nsnet invocation did.
type runResult struct {
	code           int
	stdout, stderr string
}

func (r runResult) String() string {
	return fmt.Sprintf("exit code %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// newNsnetEnv builds nsnet and a rootfs and registers the leftover
// checks: no state, no nsnet process and no new mount may remain.
func newNsnetEnv(t testing.TB) *nsnetEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces and mounts")
	}
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox not found: install busybox-static (make deps)")
	}
	bin := harness.Build(t).RequireNsnet(t)
	e := &nsnetEnv{t: t, bin: bin}
	// Not t.TempDir: a container whose root maps to an unprivileged host
	// uid must be able to reach the rootfs and its /etc files.
	e.state = sharedTempDir(t, "nsnet-run-state-", 0o711)
	e.rootfs = busyboxRootfs(t)
	before := hostMountList(t)
	t.Cleanup(func() {
		if entries, _ := os.ReadDir(e.state); len(entries) > 0 {
			var names []string
			for _, d := range entries {
				names = append(names, d.Name())
				e.run("rm", "-f", d.Name())
			}
			t.Errorf("state left behind: %v", names)
		}
		for _, pid := range e.processes() {
			t.Errorf("nsnet process %d left behind; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		after := hostMountList(t)
		for _, m := range after {
			if !slices.Contains(before, m) {
				t.Errorf("new host mount left behind: %s", m)
			}
		}
	})
	return e
}

// sharedTempDir makes a temporary directory with the given mode, removed
// at the end of the test.
func sharedTempDir(t testing.TB, prefix string, mode os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// busyboxRootfs makes a busybox root in a directory every uid can reach.
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	dir := sharedTempDir(t, "nsnet-run-rootfs-", 0o755)
	if err := testrootfs.Busybox(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// command returns an nsnet invocation with the test's state root.
func (e *nsnetEnv) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = append(append(os.Environ(), "NSNET_ROOT="+e.state), e.env...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs nsnet to completion (killed after 30s).
func (e *nsnetEnv) run(args ...string) runResult {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var err error
	if e.in != nil {
		err = e.in(cmd.Run)
	} else {
		err = cmd.Run()
	}
	r := runResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	if err != nil && cmd.ProcessState == nil {
		e.t.Fatalf("nsnet %v: %v", args, err)
	}
	return r
}

// sh runs a busybox shell script in a throw-away container of the
// rootfs, with extra run flags before it.
func (e *nsnetEnv) sh(script string, flags ...string) runResult {
	e.t.Helper()
	args := append([]string{"run", "--rm", "--rootfs", e.rootfs}, flags...)
	return e.run(append(args, "--", "sh", "-c", script)...)
}

func (e *nsnetEnv) mustSucceed(r runResult) {
	e.t.Helper()
	if r.code != 0 {
		e.t.Fatalf("nsnet failed: %s", r)
	}
}

// detach starts a container with run -d and returns its id; it is removed
// with rm -f at the end of the test.
func (e *nsnetEnv) detach(flags ...string) string {
	e.t.Helper()
	r := e.run(append([]string{"run", "-d", "--rootfs", e.rootfs}, flags...)...)
	e.mustSucceed(r)
	id := strings.TrimSpace(r.stdout)
	e.t.Cleanup(func() { e.run("rm", "-f", id) })
	return id
}

// containerState is the part of nsnet inspect the tests read.
type containerState struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Pid      int    `json:"pid"`
	Monitor  int    `json:"monitor"`
	ExitCode *int   `json:"exitCode"`
	Dir      string `json:"dir"`
}

func (e *nsnetEnv) inspect(ref string) containerState {
	e.t.Helper()
	r := e.run("inspect", ref)
	e.mustSucceed(r)
	var st containerState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		e.t.Fatalf("decoding inspect output: %v\n%s", err, r.stdout)
	}
	return st
}

// waitStatus polls inspect until the container has the status.
func (e *nsnetEnv) waitStatus(ref, status string) containerState {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.inspect(ref)
		if st.Status == status {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s is %s, want %s", ref, st.Status, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processes lists the processes running the test's nsnet binary: run,
// monitors, inits and exec children.
func (e *nsnetEnv) processes() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == e.bin {
			out = append(out, pid)
		}
	}
	return out
}

// hostMountList is the test process's mount table (see testrootfs.HostMounts).
func hostMountList(t testing.TB) []string {
	t.Helper()
	m, err := testrootfs.HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	return m
}
