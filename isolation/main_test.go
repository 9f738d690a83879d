package isolation

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/internal/testrootfs"
)

// busyboxRoot is a rootfs made of Debian's busybox-static, shared by the
// tests that need one; empty when the tests cannot build it.
var busyboxRoot string

// The test binary is also the setup child, the init and, for the escape
// test, a program run inside a container.
func TestMain(m *testing.M) {
	Reexec()
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Getenv(helperEnv)))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() == 0 {
		dir, err := buildBusyboxRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "busybox rootfs:", err)
		}
		busyboxRoot = dir
		if dir != "" {
			defer os.RemoveAll(dir)
		}
	}
	return m.Run()
}

// buildBusyboxRoot makes the shared busybox root; "" when busybox is
// not installed.
func buildBusyboxRoot() (string, error) {
	dir, err := os.MkdirTemp("", "nsnet-isolation-root-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err == nil {
		err = testrootfs.Busybox(dir)
	}
	if err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, testrootfs.ErrNoBusybox) {
			return "", nil
		}
		return "", err
	}
	return dir, nil
}

// needRoot skips tests that create namespaces when not root, and returns
// the busybox rootfs.
func needRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create namespaces and mounts")
	}
	if busyboxRoot == "" {
		t.Skip("busybox not found: install busybox-static (make deps)")
	}
	return busyboxRoot
}

type result struct {
	code           int
	stdout, stderr string
}

// runContainer starts spec, waits for it (killing it after 30s) and checks
// that it left no process and no mount behind.
func runContainer(t *testing.T, spec Spec) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	p := startContainer(t, spec, Options{Stdout: &stdout, Stderr: &stderr})
	code := waitContainer(t, p)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// startContainer starts spec and registers the leftover checks.
func startContainer(t *testing.T, spec Spec, opts Options) *Process {
	t.Helper()
	before := hostMounts(t)
	p, err := Start(spec, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pidns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.Pid))
	if err != nil {
		t.Fatalf("reading the container's pid namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = p.Signal(syscall.SIGKILL)
		_, _ = p.Wait()
		if left := processesIn(pidns); len(left) > 0 {
			t.Errorf("processes left in the container's pid namespace: %v", left)
		}
		checkMounts(t, before)
	})
	return p
}

func waitContainer(t *testing.T, p *Process) int {
	t.Helper()
	timer := time.AfterFunc(30*time.Second, func() { _ = p.Signal(syscall.SIGKILL) })
	defer timer.Stop()
	code, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return code
}

// hostMounts lists the test process's mounts (see testrootfs.HostMounts).
func hostMounts(t *testing.T) []string {
	t.Helper()
	m, err := testrootfs.HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func checkMounts(t *testing.T, before []string) {
	t.Helper()
	after := hostMounts(t)
	for _, m := range after {
		if !slices.Contains(before, m) {
			t.Errorf("new host mount: %s", m)
		}
	}
	for _, m := range before {
		if !slices.Contains(after, m) {
			t.Errorf("host mount gone: %s", m)
		}
	}
}

// processesIn lists the host PIDs of processes in the given pid namespace.
func processesIn(pidns string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && ns == pidns {
			out = append(out, e.Name())
		}
	}
	return out
}

// sh returns a Spec running a busybox shell script in root.
func sh(root, script string) Spec {
	return Spec{Rootfs: root, Args: []string{"sh", "-c", script}, Init: true}
}

func mustSucceed(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}
