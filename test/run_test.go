package test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/caps"
)

func TestRunHostnameAndEtcFiles(t *testing.T) {
	e := newNsnetEnv(t)
	host, _ := os.Hostname()
	r := e.sh(`hostname; cat /etc/hostname /etc/hosts`, "--hostname", "nsnet-run-uts", "--add-host", "db.test:10.1.2.3")
	e.mustSucceed(r)
	lines := strings.Split(r.stdout, "\n")
	if lines[0] != "nsnet-run-uts" || lines[1] != "nsnet-run-uts" {
		t.Fatalf("hostname and /etc/hostname: %q, want nsnet-run-uts twice", lines[:2])
	}
	for _, want := range []string{"127.0.0.1\tlocalhost", "nsnet-run-uts", "10.1.2.3\tdb.test"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("/etc/hosts lacks %q:\n%s", want, r.stdout)
		}
	}
	r = e.run("run", "--rm", "--id", "0123456789abcdef", "--rootfs", e.rootfs, "--", "hostname")
	e.mustSucceed(r)
	if got := strings.TrimSpace(r.stdout); got != "0123456789ab" {
		t.Errorf("default hostname %q, want the short id 0123456789ab", got)
	}
	if after, _ := os.Hostname(); after != host {
		t.Fatalf("host name changed from %q to %q", host, after)
	}
}

func TestRunPIDNamespace(t *testing.T) {
	e := newNsnetEnv(t)
	r := e.sh(`echo $$; ps -o pid,comm; true`)
	e.mustSucceed(r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	procs := map[string]string{}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		procs[f[0]] = f[1]
	}
	if procs["1"] != "nsnet-init" || procs[lines[0]] != "sh" || len(procs) != 3 {
		t.Fatalf("ps shows %v; want only nsnet-init as 1, sh and ps", procs)
	}
	r = e.sh(`echo $$`, "--no-init")
	e.mustSucceed(r)
	if strings.TrimSpace(r.stdout) != "1" {
		t.Fatalf("with --no-init the command is PID %s, want 1", r.stdout)
	}
}

func TestRunIPCNamespace(t *testing.T) {
	e := newNsnetEnv(t)
	// Marked for removal at once: it lives only while this process is
	// attached, so nothing outlives the test.
	id, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatalf("creating a SysV shm segment: %v", err)
	}
	mem, err := unix.SysvShmAttach(id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.SysvShmDetach(mem) })
	if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil {
		t.Fatal(err)
	}
	r := e.sh(`cat /proc/sysvipc/shm | wc -l`)
	e.mustSucceed(r)
	if got := strings.TrimSpace(r.stdout); got != "1" {
		t.Fatalf("the container sees %s lines in /proc/sysvipc/shm, want only the header", got)
	}
}

func TestRunMountsInvisibleToHost(t *testing.T) {
	e := newNsnetEnv(t)
	vol := sharedTempDir(t, "nsnet-run-vol-", 0o755)
	before := hostMountList(t)
	id := e.detach("-v", vol+":/data", "--", "sleep", "60")
	e.waitStatus(id, "running")
	for _, m := range hostMountList(t) {
		if !containsLine(before, m) {
			t.Errorf("a container mount shows on the host: %s", m)
		}
	}
	e.mustSucceed(e.run("rm", "-f", id))
}

func containsLine(lines []string, l string) bool {
	for _, x := range lines {
		if x == l {
			return true
		}
	}
	return false
}

func TestRunVolumes(t *testing.T) {
	e := newNsnetEnv(t)
	vol := sharedTempDir(t, "nsnet-run-vol-", 0o755)
	if err := os.WriteFile(filepath.Join(vol, "in"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.sh(`cat /data/in && echo from container > /data/out`, "-v", vol+":/data")
	e.mustSucceed(r)
	if r.stdout != "from host\n" {
		t.Errorf("container read %q from the volume", r.stdout)
	}
	if got, err := os.ReadFile(filepath.Join(vol, "out")); err != nil || string(got) != "from container\n" {
		t.Errorf("host reads %q, %v from the volume", got, err)
	}
	r = e.sh(`cat /data/in && echo no > /data/denied`, "-v", vol+":/data:ro")
	if r.code == 0 || !strings.Contains(r.stdout, "from host") {
		t.Errorf("read-only volume: %s", r)
	}
	if _, err := os.Stat(filepath.Join(vol, "denied")); err == nil {
		t.Errorf("the container wrote into a read-only volume")
	}
}

func TestRunExitCodes(t *testing.T) {
	e := newNsnetEnv(t)
	for _, tc := range []struct {
		script string
		flags  []string
		want   int
	}{
		{"exit 0", nil, 0},
		{"exit 3", nil, 3},
		{"kill -9 $$", nil, 137},
		// The kernel ignores a SIGKILL sent to PID 1 from inside.
		{"kill -9 $$", []string{"--no-init"}, 0},
	} {
		if r := e.sh(tc.script, tc.flags...); r.code != tc.want {
			t.Errorf("%q %v: %s; want exit code %d", tc.script, tc.flags, r, tc.want)
		}
	}
}

func TestRunSignalForwarded(t *testing.T) {
	e := newNsnetEnv(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := e.command(ctx, "run", "--rm", "--rootfs", e.rootfs, "--", "sh", "-c",
				fmt.Sprintf(`trap "exit 42" %d; echo ready; while :; do sleep 0.05; done`, int(sig)))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			line, _ := bufio.NewReader(out).ReadString('\n')
			if line != "ready\n" {
				t.Fatalf("container printed %q", line)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != 42 {
				t.Fatalf("exit code %d, want 42 from the trap of %v", code, sig)
			}
		})
	}
}

func TestRunReapsZombies(t *testing.T) {
	e := newNsnetEnv(t)
	// The subshell exits at once, orphaning its sleep to PID 1, which
	// must reap it once it exits.
	r := e.sh(`(sleep 0.1 &); sleep 0.6; ps -o stat,comm | grep -c '^Z' || true`)
	e.mustSucceed(r)
	if got := strings.TrimSpace(r.stdout); got != "0" {
		t.Fatalf("%s zombies in the container", got)
	}
}

func TestRunDefaultRootfs(t *testing.T) {
	e := newNsnetEnv(t)
	r := e.run("run", "--rm", "--", "sh", "-c", "echo ok")
	e.mustSucceed(r)
	if r.stdout != "ok\n" {
		t.Fatalf("got %q", r.stdout)
	}
}

func TestRunUserNamespace(t *testing.T) {
	e := newNsnetEnv(t)
	vol := sharedTempDir(t, "nsnet-run-vol-", 0o777)
	r := e.sh(`id -u; touch /mnt/f`, "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", "-v", vol+":/mnt")
	e.mustSucceed(r)
	if strings.TrimSpace(r.stdout) != "0" {
		t.Errorf("uid inside %q, want 0", r.stdout)
	}
	st, err := os.Stat(filepath.Join(vol, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 100000 || sys.Gid != 100000 {
		t.Errorf("file made by root inside is owned by %d:%d outside, want 100000:100000", sys.Uid, sys.Gid)
	}
	// The default map makes the caller root inside.
	r = e.sh(`id -u; cat /proc/self/uid_map`, "--userns")
	e.mustSucceed(r)
	if f := strings.Fields(r.stdout); len(f) != 4 || f[0] != "0" || f[1] != "0" || f[2] != fmt.Sprint(os.Geteuid()) || f[3] != "1" {
		t.Errorf("--userns: got %q, want uid 0 mapped to the caller %d", r.stdout, os.Geteuid())
	}
}

// exec into a detached user-namespaced container runs in its user
// namespace: root there, with its map and capabilities.
func TestRunUserNamespaceExec(t *testing.T) {
	e := newNsnetEnv(t)
	id := e.detach("--userns", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", "--", "sleep", "60")
	st := e.waitStatus(id, "running")
	userns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	r := e.run("exec", id, "--", "sh", "-c", "id -u; cat /proc/self/uid_map; grep CapEff /proc/self/status; readlink /proc/self/ns/user")
	e.mustSucceed(r)
	got := regexp.MustCompile(`[ \t]+`).ReplaceAllString(r.stdout, " ")
	if want := fmt.Sprintf("0\n 0 100000 65536\nCapEff: %s\n%s\n", caps.Default, userns); got != want {
		t.Errorf("exec printed %q, want %q", got, want)
	}
	if r := e.run("exec", id, "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exec of exit 7: %s; want exit code 7", r)
	}
	if r := e.run("exec", id, "--", "nsnet-no-such-command"); r.code != 125 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("exec of a missing command: %s; want exit code 125 and why", r)
	}
	e.mustSucceed(e.run("rm", "-f", id))
	if _, err := os.Stat(st.Dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s after rm -f: %v", st.Dir, err)
	}
}

func TestRunAuditSmoke(t *testing.T) {
	e := newNsnetEnv(t)
	r := e.sh(`grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status`)
	e.mustSucceed(r)
	want := caps.Default.String()
	for _, line := range []string{"CapEff:\t" + want, "CapBnd:\t" + want, "NoNewPrivs:\t1"} {
		if !strings.Contains(r.stdout, line+"\n") {
			t.Errorf("want %q in:\n%s", line, r.stdout)
		}
	}
}

func TestRunDetachedLifecycle(t *testing.T) {
	e := newNsnetEnv(t)
	id := e.detach("--name", "nsnet-run-life", "--hostname", "life", "--", "sh", "-c", "echo hello; exec sleep 60")
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("run -d printed %q, want a 12-hex id", id)
	}
	st := e.waitStatus("nsnet-run-life", "running")

	r := e.run("ps")
	e.mustSucceed(r)
	if !regexp.MustCompile(id + `\s+nsnet-run-life\s+running\s+"sh -c echo hello; exec sleep 60"`).MatchString(r.stdout) {
		t.Errorf("ps:\n%s", r.stdout)
	}

	// exec joins the container: same host name, same PID namespace (it
	// sees the container's sleep), its own exit code.
	r = e.run("exec", "nsnet-run-life", "--", "sh", "-c", "hostname; readlink /proc/self/ns/pid; ps -o comm | grep -c '^sleep'")
	e.mustSucceed(r)
	pidns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := "life\n" + pidns + "\n1\n"; r.stdout != want {
		t.Errorf("exec printed %q, want %q", r.stdout, want)
	}
	if r := e.run("exec", id[:6], "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Errorf("exec by id prefix: %s; want exit code 7", r)
	}

	if r := e.run("rm", id); r.code != 125 || !strings.Contains(r.stderr, "running") {
		t.Errorf("rm of a running container: %s", r)
	}
	e.mustSucceed(e.run("kill", id))
	st = e.waitStatus(id, "stopped")
	if st.ExitCode == nil || *st.ExitCode != 143 {
		t.Errorf("exit code after SIGTERM: %v, want 143", st.ExitCode)
	}
	log, err := os.ReadFile(filepath.Join(st.Dir, "log"))
	if err != nil || string(log) != "hello\n" {
		t.Errorf("log %q, %v", log, err)
	}
	r = e.run("ps")
	if strings.Contains(r.stdout, id) {
		t.Errorf("ps shows a stopped container:\n%s", r.stdout)
	}
	r = e.run("ps", "-a")
	if !regexp.MustCompile(id + `\s+nsnet-run-life\s+exited \(143\)`).MatchString(r.stdout) {
		t.Errorf("ps -a:\n%s", r.stdout)
	}
	e.mustSucceed(e.run("rm", id))
	if _, err := os.Stat(st.Dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s after rm: %v", st.Dir, err)
	}

	// rm -f kills a running container.
	id = e.detach("--", "sleep", "60")
	st = e.waitStatus(id, "running")
	e.mustSucceed(e.run("rm", "-f", id))
	if unix.Kill(st.Pid, 0) == nil {
		t.Errorf("container PID %d alive after rm -f", st.Pid)
	}
}

func TestRunKilledMonitor(t *testing.T) {
	e := newNsnetEnv(t)
	id := e.detach("--", "sleep", "60")
	st := e.waitStatus(id, "running")
	if err := unix.Kill(st.Monitor, unix.SIGKILL); err != nil {
		t.Fatalf("killing monitor %d: %v", st.Monitor, err)
	}
	st = e.waitStatus(id, "stopped")
	if st.ExitCode != nil {
		t.Errorf("exit code %d recorded, though no one was left to record it", *st.ExitCode)
	}
	r := e.run("ps", "-a")
	if !regexp.MustCompile(id + `\s+\S+\s+stopped`).MatchString(r.stdout) {
		t.Errorf("ps -a:\n%s", r.stdout)
	}
	e.mustSucceed(e.run("rm", id))
	if _, err := os.Stat(st.Dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s after rm: %v", st.Dir, err)
	}
}

func TestRunBadInput(t *testing.T) {
	e := newNsnetEnv(t)
	empty := sharedTempDir(t, "nsnet-run-empty-", 0o755)
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error line
	}{
		{"missing rootfs", []string{"run", "--rootfs", "/nonexistent/nsnet-root", "--", "sh"}, "/nonexistent/nsnet-root"},
		{"rootfs without the command", []string{"run", "--rootfs", empty, "--", "sh"}, "sh"},
		{"command not in rootfs", []string{"run", "--rootfs", e.rootfs, "--", "nsnet-no-such-cmd"}, "nsnet-no-such-cmd"},
		{"bad volume", []string{"run", "--rootfs", e.rootfs, "-v", "nocolon", "--", "true"}, "nocolon"},
		{"missing volume source", []string{"run", "--rootfs", e.rootfs, "-v", "/nonexistent/nsnet-vol:/x", "--", "true"}, "nsnet-vol"},
		{"bad id", []string{"run", "--id", "../escape", "--rootfs", e.rootfs, "--", "true"}, "../escape"},
		{"bad net", []string{"run", "--net", "bridge0", "--rootfs", e.rootfs, "--", "true"}, "bridge0"},
		{"bad uidmap", []string{"run", "--uidmap", "0:1", "--rootfs", e.rootfs, "--", "true"}, "0:1"},
		{"unknown flag", []string{"run", "--nsnet-bogus", "--", "true"}, "nsnet-bogus"},
		{"exec unknown", []string{"exec", "nsnet-nonexistent", "--", "true"}, "nsnet-nonexistent"},
		{"kill unknown", []string{"kill", "nsnet-nonexistent"}, "nsnet-nonexistent"},
		{"rm unknown", []string{"rm", "nsnet-nonexistent"}, "nsnet-nonexistent"},
		{"inspect bad id", []string{"inspect", "../x"}, "../x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.run(tc.args...)
			if r.code != 125 {
				t.Errorf("exit code %d, want 125: %s", r.code, r)
			}
			if strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q: want one line naming %q", r.stderr, tc.want)
			}
			if entries, _ := os.ReadDir(e.state); len(entries) != 0 {
				t.Errorf("state left behind: %v", entries)
			}
		})
	}
}
