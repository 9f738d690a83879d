package initproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary re-executes itself as the init under test, so Run owns
// the children it reaps and the test process keeps its own.
func TestMain(m *testing.M) {
	if mode := os.Getenv("NSNET_INITPROC_TEST"); mode != "" {
		var serve func(*Children)
		if mode == "children" {
			serve = startChildren
		}
		args := os.Args[1:]
		code := Run(Command{Path: args[0], Args: args, Env: os.Environ()}, nil, func(err error) {
			if err != nil {
				fmt.Fprintln(os.Stderr, "start:", err)
			}
		}, serve)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func initCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "NSNET_INITPROC_TEST=1")
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("running init: %v", err)
	}
	return ee.ExitCode()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"success", []string{"/bin/sh", "-c", "exit 0"}, 0},
		{"exit 3", []string{"/bin/sh", "-c", "exit 3"}, 3},
		{"killed by SIGKILL", []string{"/bin/sh", "-c", "kill -9 $$"}, 128 + 9},
		{"killed by SIGTERM", []string{"/bin/sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"not found", []string{"/nonexistent/cmd"}, 127},
		{"not executable", []string{"/etc/hostname"}, 126},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := initCmd(t, tt.args...).CombinedOutput()
			if got := exitCode(t, err); got != tt.want {
				t.Fatalf("exit code %d, want %d; output:\n%s", got, tt.want, out)
			}
		})
	}
}

func TestForwardsSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := initCmd(t, "/bin/sh", "-c",
				fmt.Sprintf(`trap "echo got; exit 42" %d; echo ready; while :; do sleep 0.05; done`, int(sig)))
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			r := bufio.NewReader(stdout)
			if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(r)
			if got := exitCode(t, cmd.Wait()); got != 42 || string(rest) != "got\n" {
				t.Fatalf("exit code %d, output %q; want 42 and the trap's output", got, rest)
			}
		})
	}
}

// An orphan of the command is reparented to the init and reaped when it
// exits, instead of staying a zombie.
func TestReapsOrphans(t *testing.T) {
	script := `o=$(sh -c 'sleep 0.5 >/dev/null 2>&1 & echo $!')
echo ppid=$(awk '/^PPid/{print $2}' /proc/$o/status)
i=0; while [ -e /proc/$o ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
echo state=$(awk '/^State/{print $2}' /proc/$o/status 2>/dev/null)`
	cmd := initCmd(t, "/bin/sh", "-c", script)
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("init: %v; output:\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("init did not exit")
	}
	want := "ppid=" + strconv.Itoa(cmd.Process.Pid) + "\nstate=\n"
	if out.String() != want {
		t.Fatalf("output %q, want %q (orphan reparented to the init, then reaped)", out.String(), want)
	}
}

// startChildren is the test init's serve: it starts children one after
// the other and prints how each one ended.
func startChildren(c *Children) {
	for _, cmd := range []Command{
		{Path: "/bin/sh", Args: []string{"sh", "-c", "exit 7"}},
		{Path: "/bin/sh", Args: []string{"sh", "-c", "pwd; kill -TERM $$"}, Dir: "/tmp"},
		{Path: "/nonexistent/cmd", Args: []string{"cmd"}},
	} {
		pidfd, exited, err := c.Start(cmd)
		if err != nil {
			fmt.Println("not started", startFailureCode(err))
			continue
		}
		unix.Close(pidfd)
		fmt.Println("exit", ExitCode(<-exited))
	}
	fmt.Println("done")
}

// Children started on request are reaped by the init and their status
// handed back, while the init goes on serving its command, whose exit
// still decides the init's.
func TestChildren(t *testing.T) {
	cmd := initCmd(t, "/bin/sh", "-c", "read line; exit 4")
	cmd.Env = append(os.Environ(), "NSNET_INITPROC_TEST=children")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := bufio.NewReader(stdout)
	var got []string
	for len(got) == 0 || got[len(got)-1] != "done" {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, strings.TrimSuffix(line, "\n"))
	}
	want := []string{"exit 7", "/tmp", "exit 143", "not started 127", "done"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("children reported %q, want %q", got, want)
	}
	stdin.Close()
	if code := exitCode(t, cmd.Wait()); code != 4 {
		t.Fatalf("init exited with %d, want the command's 4", code)
	}
}
