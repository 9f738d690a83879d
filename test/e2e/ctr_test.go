package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestContainerdCtr runs a web server with `ctr run --rm --cni` on containerd 1.6 + runc and
// the shipped 10-bridge-lite conflist. ctr (not containerd) runs the plugins: ADD with the task's
// /proc/PID/ns/net before the task starts and, once the task exited, DEL with an empty
// CNI_NETNS, since the netns died with the task. ctr cannot publish ports (no -p and no
// portMappings capability), so host ports are covered by the CRI and podman scenarios.
func TestContainerdCtr(t *testing.T) {
	requireCommand(t, "containerd", "ctr", "runc", "containerd-shim-runc-v2")
	image := busyboxImage(t)
	sc := newScenario(t)
	s := sc.Sandbox
	conf := s.installConflist(t, "10-bridge-lite.conflist")
	startContainerd(t, s, false)
	if _, err := s.ctr("default", 2*time.Minute, "images", "import", image); err != nil {
		t.Fatal(err)
	}

	const id = "web"
	// ctr run stays in the foreground while the task runs; its output is logged if the test fails.
	// A relative cgroup path: runc puts the container below its own cgroup, which is ours.
	run := s.startDaemon(t, "ctr-run", append(ctrArgs("default", "run", "--rm", "--cni", "--null-io",
		"--cgroup", sc.Cgroups.Name+"/"+id, imageRef, id), httpdCmd...)...)
	t.Cleanup(func() {
		// Only when the test failed before the container was stopped.
		if run.running() {
			_, _ = s.ctr("default", time.Minute, "task", "kill", "--signal", "SIGKILL", id)
			<-run.done
		}
	})

	var pid int
	err := waitFor(time.Minute, func() error {
		if !run.running() {
			return fmt.Errorf("ctr run exited: %v", run.err)
		}
		out, err := s.ctr("default", 10*time.Second, "task", "ls")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				pid, err = strconv.Atoi(f[1])
				return err
			}
		}
		return fmt.Errorf("task %s not running: %s", id, out)
	})
	if err != nil {
		t.Fatal(err)
	}

	sc.Cgroups.checkProcess(t, pid)

	var execs atomic.Int64
	exec := func(args ...string) (string, error) {
		execID := fmt.Sprintf("probe%d", execs.Add(1))
		return s.ctr("default", time.Minute, append([]string{"task", "exec", "--exec-id", execID, id, "timeout", execTimeout}, args...)...)
	}
	ip, err := containerIPv4(exec)
	if err != nil {
		t.Fatal(err)
	}
	containerChecks{Sandbox: s, Conflist: conf, IP: ip, Exec: exec, ExtURL: sc.ExtURL}.run(t)

	if _, err := s.ctr("default", time.Minute, "task", "kill", "--signal", "SIGKILL", id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-run.done:
	case <-time.After(time.Minute):
		t.Fatal("ctr run did not return after its task was killed")
	}
	if out, err := s.ctr("default", time.Minute, "containers", "ls", "--quiet"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("containers left after ctr run --rm: %q (%v)", out, err)
	}
	s.assertNoLeftovers(t, conf)

	calls := s.calls(t)
	logCalls(t, calls)
	for _, p := range ourPlugins {
		adds, dels := filterCalls(calls, p, "ADD"), filterCalls(calls, p, "DEL")
		if len(adds) != 1 || !strings.HasPrefix(adds[0].NetNS, "/proc/") || adds[0].ContainerID != "default-"+id {
			t.Errorf("%s: want one ADD for default-%s with a /proc/PID/ns/net path, got %v", p, id, adds)
		}
		if len(dels) != 1 || dels[0].NetNS != "" {
			t.Errorf("%s: want one DEL with an empty CNI_NETNS, got %v", p, dels)
		}
	}
}
