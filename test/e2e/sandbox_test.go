package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// sandboxSetup runs as the first process of the private mount namespace. /etc, /opt and
// /var/lib get an overlay whose upper layer is on a private tmpfs, so mount points that do not
// exist on the machine can be created without writing to its disk (mounts below them are put
// back on top); then every directory a client keeps configuration or state in gets a fresh
// tmpfs. unshare made every mount private, so none of this propagates back. The process then
// idles: it anchors the namespace, and the namespace and all its mounts vanish when it and
// everything that entered it are gone.
const sandboxSetup = `set -eu
priv=$1
mount -t tmpfs -o mode=0755 nsnet-e2e "$priv"
for d in /etc /opt /var/lib; do
	[ -d "$d" ] || { echo "$d does not exist" >&2; exit 1; }
	subs=$(awk -v d="$d/" 'substr($5, 1, length(d)) == d { print $5 }' /proc/self/mountinfo)
	exec 9<"$d"
	mkdir -p "$priv/ovl$d/upper" "$priv/ovl$d/work"
	mount -t overlay nsnet-e2e -o "lowerdir=$d,upperdir=$priv/ovl$d/upper,workdir=$priv/ovl$d/work" "$d"
	# The overlay hides what was mounted below $d (a container's /etc/resolv.conf, say); fd 9
	# still reaches it, so it goes back on top.
	for m in $subs; do
		mount --no-canonicalize --rbind "/proc/$$/fd/9/${m#"$d"/}" "$m"
	done
	exec 9<&-
done
for d in /etc/cni/net.d /opt/cni/bin /var/lib/cni /var/lib/containerd /var/lib/containers /etc/containers /etc/containerd /run; do
	mkdir -p "$d"
	mount -t tmpfs -o mode=0755 nsnet-e2e "$d"
done
echo ready
exec sleep infinity
`

// sandboxPath is the PATH of every command run in a sandbox: containerd looks for runc and the
// shim there, podman for conmon and runc.
const sandboxPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// sandbox is a private mount namespace joined to a sandbox host's network namespace, where a
// CNI client, its daemon and the plugins run.
type sandbox struct {
	Host   *harness.Host
	holder *exec.Cmd
	exited chan error
	mntNS  string // the namespace's /proc/PID/ns/mnt link text, which tells our processes apart
}

// newSandbox creates the sandbox and removes it when the test ends, killing (by PID) every
// process still inside it.
func newSandbox(t *testing.T, host *harness.Host) *sandbox {
	t.Helper()
	priv := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(priv, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+host.Path(), "--",
		"unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", sandboxSetup, "sh", priv)
	// Should the test binary die without cleaning up (a test timeout panics), the anchor goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting sandbox: %v", err)
	}
	s := &sandbox{Host: host, holder: cmd, exited: make(chan error, 1)}
	go func() { s.exited <- cmd.Wait() }()
	t.Cleanup(func() { s.close(t) })

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("setting up the sandbox's mount namespace: %v: %s", err, stderr.String())
	}
	if s.mntNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)); err != nil {
		t.Fatalf("reading the sandbox's mount namespace: %v", err)
	}
	return s
}

// close kills the processes left inside the sandbox, then its anchor. Runtimes' daemons were
// stopped by their own cleanups, which run first; what is left are shims or monitors that had
// not exited yet, and clients that hung.
func (s *sandbox) close(t *testing.T) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := s.processes()
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, pid := range pids {
				t.Logf("killing process %d (%s) left in the sandbox", pid, cmdline(pid))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			deadline = time.Now().Add(5 * time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = s.holder.Process.Kill()
	<-s.exited
}

// processes lists the processes inside the sandbox's mount namespace other than its anchor:
// only processes the scenario started (and their children) can be there.
func (s *sandbox) processes() []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == s.holder.Process.Pid {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns == s.mntNS {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// path is how the test, from the machine's mount namespace, reaches p inside the sandbox.
func (s *sandbox) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", s.holder.Process.Pid, p)
}

// writeFile writes a file inside the sandbox, creating its directory.
func (s *sandbox) writeFile(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(s.path(p)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(p), data, mode); err != nil {
		t.Fatal(err)
	}
}

// command prepares args to run inside the sandbox (its mount and network namespaces).
func (s *sandbox) command(ctx context.Context, args ...string) *exec.Cmd {
	pid := strconv.Itoa(s.holder.Process.Pid)
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", pid, "--mount", "--net", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+sandboxPath)
	return cmd
}

// run runs args inside the sandbox with a timeout and returns stdout; a failure's error carries
// stderr.
func (s *sandbox) run(timeout time.Duration, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := s.command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("%s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err,
			bytes.TrimSpace(stdout.Bytes()), bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// daemon is a long-running process started inside a sandbox, logging to a file.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // how it exited, once done is closed
	log  string
}

// startDaemon starts args inside the sandbox and stops it (SIGTERM, then SIGKILL after 15s) when
// the test ends; its output goes to a log file that is printed when the test fails.
func (s *sandbox) startDaemon(t *testing.T, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, done: make(chan struct{}), log: filepath.Join(t.TempDir(), name+".log")}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = s.command(context.Background(), args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Should the test binary die without cleaning up, the daemon goes too.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			d.dumpLog(t)
		}
	})
	return d
}

// stop terminates the daemon; nsenter execs it, so the PID is the daemon itself.
func (d *daemon) stop(t *testing.T) {
	if !d.running() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s (pid %d) did not stop within 15s of SIGTERM; killing it", d.name, d.cmd.Process.Pid)
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemon) dumpLog(t *testing.T) {
	b, err := os.ReadFile(d.log)
	if err != nil {
		return
	}
	const max = 20000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	t.Logf("%s log (last %d bytes):\n%s", d.name, len(b), b)
}

// waitFor polls cond until it returns nil or the timeout passes, and returns its last error.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
