package isolation

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/internal/testns"
	"github.com/nsnet/nsnet/isolation/caps"
)

func TestHostname(t *testing.T) {
	root := needRoot(t)
	host, _ := os.Hostname()
	r := runContainer(t, Spec{Rootfs: root, Args: []string{"hostname"}, Hostname: "nsnet-test-uts"})
	mustSucceed(t, r)
	if got := strings.TrimSpace(r.stdout); got != "nsnet-test-uts" {
		t.Fatalf("hostname inside = %q", got)
	}
	if after, _ := os.Hostname(); after != host {
		t.Fatalf("host name changed from %q to %q", host, after)
	}
}

func TestPIDNamespace(t *testing.T) {
	root := needRoot(t)
	t.Run("init", func(t *testing.T) {
		r := runContainer(t, sh(root, `echo $$; ps -o pid,comm; true`))
		mustSucceed(t, r)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if lines[0] == "1" {
			t.Fatalf("the command is PID 1 although Init is set")
		}
		procs := map[string]string{}
		for _, l := range lines[2:] {
			f := strings.Fields(l)
			procs[f[0]] = f[1]
		}
		if procs["1"] != initArg0 || procs[lines[0]] != "sh" || len(procs) != 3 {
			t.Fatalf("ps shows %v; want only %s as 1, sh and ps", procs, initArg0)
		}
	})
	t.Run("no init", func(t *testing.T) {
		spec := sh(root, `echo $$; ps -o pid,comm; true`)
		spec.Init = false
		r := runContainer(t, spec)
		mustSucceed(t, r)
		if want := "1\nPID   COMMAND\n    1 sh\n"; !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 4 {
			t.Fatalf("got %q, want the shell as PID 1 and ps seeing only itself besides", r.stdout)
		}
	})
}

func TestIPCNamespace(t *testing.T) {
	root := needRoot(t)
	// A segment marked for removal lives until this process detaches or
	// exits, so nothing outlives the test even if it crashes.
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
	listed := func(table string) bool {
		for _, l := range strings.Split(table, "\n")[1:] {
			if f := strings.Fields(l); len(f) > 1 && f[1] == strconv.Itoa(id) {
				return true
			}
		}
		return false
	}
	host, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil || !listed(string(host)) {
		t.Fatalf("segment %d not in the host's table: %v", id, err)
	}
	r := runContainer(t, sh(root, `cat /proc/sysvipc/shm`))
	mustSucceed(t, r)
	if n := len(strings.Split(strings.TrimSpace(r.stdout), "\n")); n != 1 || listed(r.stdout) {
		t.Fatalf("container sees SysV segments:\n%s", r.stdout)
	}
}

// The container's mounts exist only in its own namespace: while it runs
// and after it ends, the test process's mount table is unchanged
// (startContainer checks "after").
func TestMountsInvisibleToHost(t *testing.T) {
	root := needRoot(t)
	before := hostMounts(t)
	stdin, w := io.Pipe()
	var out strings.Builder
	p := startContainer(t, sh(root, `read x; wc -l < /proc/self/mountinfo`), Options{Stdin: stdin, Stdout: &out})
	inside, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(inside), " / /proc ") || !strings.Contains(string(inside), " / /dev/pts ") {
		t.Fatalf("container mount table lacks /proc or /dev/pts:\n%s", inside)
	}
	checkMounts(t, before)
	if strings.Contains(strings.Join(hostMounts(t), "\n"), root) {
		t.Fatalf("host mount table mentions the rootfs %s", root)
	}
	w.Close()
	if code := waitContainer(t, p); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestVolumes(t *testing.T) {
	root := needRoot(t)
	rw, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "single")
	if err := os.WriteFile(file, []byte("one file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := sh(root, `set -e
echo written > /data/out
cat /ro/in /etc/single.conf
if touch /ro/x 2>/dev/null; then echo ro-writable; fi
if echo x >> /etc/single.conf 2>/dev/null; then echo file-writable; fi
mkdir /data/sub/deeper -p`)
	spec.Volumes = []Volume{
		{Source: rw, Target: "/data"},
		{Source: ro, Target: "/ro", ReadOnly: true},
		{Source: file, Target: "/etc/single.conf", ReadOnly: true},
	}
	r := runContainer(t, spec)
	mustSucceed(t, r)
	if r.stdout != "from host\none file\n" {
		t.Fatalf("output %q", r.stdout)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
		t.Fatalf("file written in the volume: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(rw, "sub", "deeper")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ro, "x")); err == nil {
		t.Fatal("read-only volume was written")
	}
}

func TestEtcFiles(t *testing.T) {
	root := needRoot(t)
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("10.1.2.3 peer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := sh(root, `cat /etc/hosts`)
	spec.EtcFiles = map[string]string{"/etc/hosts": hosts}
	r := runContainer(t, spec)
	mustSucceed(t, r)
	if r.stdout != "10.1.2.3 peer\n" {
		t.Fatalf("/etc/hosts = %q", r.stdout)
	}
}

func TestExitCodes(t *testing.T) {
	root := needRoot(t)
	tests := []struct {
		name   string
		init   bool
		script string
		want   int
	}{
		{"exit 3 with init", true, "exit 3", 3},
		{"exit 3 without init", false, "exit 3", 3},
		{"SIGKILL with init", true, "kill -9 $$", 137},
		{"SIGTERM with init", true, "kill -TERM $$", 143},
		{"not found in the container", true, "exec /nonexistent", 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := sh(root, tt.script)
			spec.Init = tt.init
			if r := runContainer(t, spec); r.code != tt.want {
				t.Fatalf("exit code %d, want %d; stderr %q", r.code, tt.want, r.stderr)
			}
		})
	}
	t.Run("SIGKILL of PID 1 without init", func(t *testing.T) {
		spec := sh(root, "sleep 30")
		spec.Init = false
		p := startContainer(t, spec, Options{})
		if err := p.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := waitContainer(t, p); code != 137 {
			t.Fatalf("exit code %d, want 137", code)
		}
	})
}

// startReady starts a script that prints "ready" once its trap is set. It
// returns the process and a function returning the rest of the output once
// the container has closed it.
func startReady(t *testing.T, spec Spec) (*Process, func() string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startContainer(t, spec, Options{Stdout: w})
	w.Close()
	t.Cleanup(func() { r.Close() })
	lines := make(chan string, 2)
	go func() {
		out := bufio.NewReader(r)
		l, _ := out.ReadString('\n')
		lines <- l
		rest, _ := io.ReadAll(out)
		lines <- string(rest)
	}()
	select {
	case l := <-lines:
		if l != "ready\n" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("container did not get ready")
	}
	return p, func() string { return <-lines }
}

func TestSignalForwarding(t *testing.T) {
	root := needRoot(t)
	trap := `trap "echo got TERM; exit 42" TERM; echo ready; while :; do sleep 0.05; done`
	t.Run("parent to init to command", func(t *testing.T) {
		p, out := startReady(t, sh(root, trap))
		p.ForwardSignals()
		// SIGTERM to the test process itself: ForwardSignals has taken
		// it over, so it reaches the container instead of ending the test.
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		code := waitContainer(t, p)
		if rest := out(); code != 42 || rest != "got TERM\n" {
			t.Fatalf("exit code %d, output %q; want 42 from the trap", code, rest)
		}
	})
	t.Run("a PID 1 command with a handler", func(t *testing.T) {
		spec := sh(root, trap)
		spec.Init = false
		p, _ := startReady(t, spec)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := waitContainer(t, p); code != 42 {
			t.Fatalf("exit code %d, want 42", code)
		}
	})
}

// An orphan (the shell's grandchild, whose parent is gone) is reparented to
// the init and reaped when it exits: no zombie is left in the container.
func TestZombieReaping(t *testing.T) {
	root := needRoot(t)
	r := runContainer(t, sh(root, `o=$(sh -c 'sleep 0.5 >/dev/null 2>&1 & echo $!')
echo ppid=$(awk '/^PPid/{print $2}' /proc/$o/status)
i=0; while [ -e /proc/$o ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
echo gone=$(test -e /proc/$o && echo no || echo yes)
for s in /proc/[0-9]*/stat; do awk '$3 == "Z" {print "zombie", $1, $2}' $s; done`))
	mustSucceed(t, r)
	if r.stdout != "ppid=1\ngone=yes\n" {
		t.Fatalf("output %q; want the orphan adopted by PID 1 and reaped", r.stdout)
	}
}

func TestDefaultRootfs(t *testing.T) {
	needRoot(t)
	marker := filepath.Join(t.TempDir(), "host-only")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runContainer(t, Spec{Init: true, Args: []string{"sh", "-c", `set -e
ls /usr/bin | head -1 | wc -l
test -e ` + marker + ` && echo host-tmp-visible
ls -A /tmp | wc -l
touch /usr/nsnet-test 2>/dev/null && echo usr-writable
touch /etc/nsnet-test 2>/dev/null && echo etc-writable
touch /new-file && echo root-writable
true`}})
	mustSucceed(t, r)
	if r.stdout != "1\n0\nroot-writable\n" {
		t.Fatalf("output %q", r.stdout)
	}
	for _, p := range []string{"/usr/nsnet-test", "/etc/nsnet-test", "/new-file"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s appeared on the host", p)
		}
	}
}

func TestReadOnlyRoot(t *testing.T) {
	root := needRoot(t)
	spec := sh(root, `touch /x 2>/dev/null && echo root-writable; touch /tmp/x && echo tmp-writable`)
	spec.ReadOnlyRoot = true
	r := runContainer(t, spec)
	mustSucceed(t, r)
	if r.stdout != "tmp-writable\n" {
		t.Fatalf("output %q", r.stdout)
	}
}

// chmodParents lets an unprivileged host uid reach dir.
func chmodParents(t *testing.T, dir string) {
	t.Helper()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUserNamespace(t *testing.T) {
	root := needRoot(t)
	t.Run("caller is root inside", func(t *testing.T) {
		spec := sh(root, `cat /proc/self/uid_map /proc/self/gid_map`)
		spec.UserNS = true
		r := runContainer(t, spec)
		mustSucceed(t, r)
		want := fmt.Sprintf("0 %d 1\n0 %d 1\n", os.Geteuid(), os.Getegid())
		if got := regexp.MustCompile(` +`).ReplaceAllString(strings.TrimLeft(r.stdout, " "), " "); strings.ReplaceAll(got, "\n ", "\n") != want {
			t.Fatalf("maps %q, want %q", r.stdout, want)
		}
	})
	t.Run("mapped range", func(t *testing.T) {
		const hostID = 231072
		vol := t.TempDir()
		chmodParents(t, vol)
		spec := sh(root, `set -e; id -u; touch /mnt/made-inside; grep Cap[EB] /proc/self/status`)
		spec.UserNS = true
		spec.UIDMap = []IDMap{{ContainerID: 0, HostID: hostID, Size: 65536}}
		spec.GIDMap = []IDMap{{ContainerID: 0, HostID: hostID, Size: 65536}}
		spec.Volumes = []Volume{{Source: vol, Target: "/mnt"}}
		if err := os.Chmod(vol, 0o777); err != nil {
			t.Fatal(err)
		}
		r := runContainer(t, spec)
		mustSucceed(t, r)
		want := fmt.Sprintf("0\nCapEff:\t%s\nCapBnd:\t%s\n", caps.Default, caps.Default)
		if r.stdout != want {
			t.Fatalf("output %q, want %q", r.stdout, want)
		}
		st, err := os.Stat(filepath.Join(vol, "made-inside"))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != hostID || sys.Gid != hostID {
			t.Fatalf("file made by root inside is owned by %d:%d on the host, want %d", sys.Uid, sys.Gid, hostID)
		}
	})
}

// An unprivileged caller gets a user-namespaced container in which it is
// root; what root makes there belongs to the caller on the host.
func TestRootlessUserNamespace(t *testing.T) {
	root := needRoot(t)
	bin, vol := rootlessSetup(t)
	cmd := rootlessCommand(bin, "rootless", root, vol, "sh", "-c", `id -u; cat /proc/self/uid_map; grep CapEff /proc/self/status; touch /mnt/made-inside`)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rootless container: %v\n%s", err, out)
	}
	got := regexp.MustCompile(`[ \t]+`).ReplaceAllString(string(out), " ")
	if want := fmt.Sprintf("0\n 0 %d 1\nCapEff: %s\n", nobody, caps.Default); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	st, err := os.Stat(filepath.Join(vol, "made-inside"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != nobody || sys.Gid != nobody {
		t.Fatalf("file made by root inside is owned by %d:%d on the host, want the caller %d", sys.Uid, sys.Gid, nobody)
	}
}

// nobody is the unprivileged caller of the rootless tests.
const nobody = 65534

// rootlessSetup returns a copy of the test binary the unprivileged caller
// may run (the test binary sits in a directory only root may enter) and a
// directory of that caller's.
func rootlessSetup(t *testing.T) (bin, vol string) {
	t.Helper()
	dir := t.TempDir()
	chmodParents(t, dir)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "isolation.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	vol = filepath.Join(dir, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(vol, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return bin, vol
}

// rootlessCommand runs helper of the test binary bin as nobody.
func rootlessCommand(bin, helper string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{helperEnv + "=" + helper}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return cmd
}

// An unprivileged caller can exec into its user-namespaced container: the
// init serves the user who started it.
func TestRootlessExec(t *testing.T) {
	root := needRoot(t)
	bin, vol := rootlessSetup(t)
	cmd := rootlessCommand(bin, "rootless-exec", root, filepath.Join(vol, "exec.sock"), "sh", "-c", `id -u; grep CapEff /proc/self/status; exit 6`)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 6 {
		t.Fatalf("rootless exec: %v, want exit code 6\n%s", err, out)
	}
	got := regexp.MustCompile(`[ \t]+`).ReplaceAllString(string(out), " ")
	if want := fmt.Sprintf("0\nCapEff: %s\n", caps.Default); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
}

// The isolation audit: what a default (unprivileged) container must not be
// able to see or do.
func TestAudit(t *testing.T) {
	root := needRoot(t)
	r := runContainer(t, sh(root, `
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status | tr -d '\t'
for f in /proc/kcore /proc/keys /proc/timer_list /proc/interrupts /proc/sched_debug /proc/latency_stats /proc/timer_stats; do
	[ -e $f ] && echo "masked-file $f $(cat $f | wc -c)"
done
for d in /proc/acpi /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
	[ -e $d ] && echo "masked-dir $d $(ls -A $d | wc -l)"
done
for f in /proc/sys/kernel/hostname /proc/sys/vm/drop_caches /proc/sysrq-trigger /proc/bus/x /proc/fs/x /proc/irq/x /sys/kernel/x /dev/x /dev/sda; do
	[ -e $f ] || [ -e $(dirname $f) ] || continue
	( echo 1 > $f ) 2>/dev/null && echo "WRITABLE $f"
done
mkdir -p /tmp/m
mount -t tmpfs none /tmp/m 2>/dev/null && echo MOUNTED
mknod /tmp/sda b 8 0 2>/dev/null && echo MKNOD-BLOCK
mknod /tmp/null c 1 3 2>/dev/null && echo MKNOD-CHAR
echo ok > /dev/null && echo dev-null-works
for f in exe root/bin/sh environ mem; do
	( cat /proc/1/$f > /dev/null ) 2>/dev/null && echo "READ-INIT $f"
done
ls /dev | tr '\n' ' '
`))
	mustSucceed(t, r)
	def := caps.Default.String()
	want := []string{
		"CapInh:0000000000000000", "CapPrm:" + def, "CapEff:" + def, "CapBnd:" + def,
		"CapAmb:0000000000000000", "NoNewPrivs:1",
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if strings.Join(lines[:len(want)], "\n") != strings.Join(want, "\n") {
		t.Errorf("capabilities:\n%s\nwant:\n%s", strings.Join(lines[:len(want)], "\n"), strings.Join(want, "\n"))
	}
	for _, l := range lines[len(want):] {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "masked-") && f[2] != "0":
			t.Errorf("not masked: %s", l)
		case strings.HasPrefix(l, "masked-"), l == "dev-null-works":
		case strings.HasPrefix(l, "core "):
			if strings.TrimSpace(l) != "core fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero" {
				t.Errorf("/dev holds %s", l)
			}
		default:
			t.Errorf("audit: %s", l)
		}
	}
	if !strings.Contains(r.stdout, "dev-null-works") {
		t.Errorf("/dev/null unusable; output:\n%s", r.stdout)
	}
}

// CAP_MKNOD given back still yields no usable device node: every
// writable mount is nodev, and /dev is read-only.
func TestMknodCapabilityYieldsNoDevice(t *testing.T) {
	root := needRoot(t)
	vol := t.TempDir()
	spec := sh(root, `for d in /tmp /run /dev/shm /vol /; do
	mknod $d/mynull c 1 3 && echo "made $d" || continue
	( echo x > $d/mynull ) 2>/dev/null && echo "OPENED $d/mynull"
	rm $d/mynull
done
mknod /dev/mynull c 1 3 2>/dev/null && echo "CREATED /dev/mynull"
true`)
	spec.CapAdd = []string{"MKNOD"}
	spec.Volumes = []Volume{{Source: vol, Target: "/vol"}}
	r := runContainer(t, spec)
	mustSucceed(t, r)
	if want := "made /tmp\nmade /run\nmade /dev/shm\nmade /vol\nmade /\n"; r.stdout != want {
		t.Fatalf("output %q, want nodes made everywhere but /dev and none usable; stderr:\n%s", r.stdout, r.stderr)
	}
}

func TestEscapeAttempts(t *testing.T) {
	root := needRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, init := range []bool{true, false} {
		t.Run(fmt.Sprintf("init=%v", init), func(t *testing.T) {
			r := runContainer(t, Spec{
				Rootfs:  root,
				Args:    []string{"/escape"},
				Env:     []string{helperEnv + "=escape", secretEnv + "=" + secret},
				Volumes: []Volume{{Source: exe, Target: "/escape", ReadOnly: true}},
				Init:    init,
			})
			mustSucceed(t, r)
			wantChecks := []string{"fds", "direct", "dotdot-absolute", "dotdot-cwd", "proc-1-root",
				"proc-self-root", "proc-1-cwd", "mount", "open_by_handle_at", "chroot"}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != len(wantChecks) {
				t.Fatalf("helper output:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			}
			for i, l := range lines {
				if l != "ok "+wantChecks[i] {
					t.Errorf("%s", l)
				}
			}
		})
	}
}

func TestSysctls(t *testing.T) {
	root := needRoot(t)
	hostShmmax, _ := os.ReadFile("/proc/sys/kernel/shmmax")
	spec := sh(root, `cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_unprivileged_port_start`)
	spec.Sysctls = map[string]string{"kernel.shmmax": "123456789", "net.ipv4.ip_unprivileged_port_start": "80"}
	r := runContainer(t, spec)
	mustSucceed(t, r)
	if r.stdout != "123456789\n80\n" {
		t.Fatalf("sysctls inside: %q", r.stdout)
	}
	if after, _ := os.ReadFile("/proc/sys/kernel/shmmax"); string(after) != string(hostShmmax) {
		t.Fatalf("host kernel.shmmax changed from %q to %q", hostShmmax, after)
	}
}

func TestJoinNetNS(t *testing.T) {
	root := needRoot(t)
	netns := testns.New(t)
	path := fmt.Sprintf("/proc/self/fd/%d", netns.Fd())
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	spec := sh(root, `readlink /proc/self/ns/net`)
	spec.NetNS = path
	r := runContainer(t, spec)
	mustSucceed(t, r)
	if want := fmt.Sprintf("net:[%d]\n", st.Ino); r.stdout != want {
		t.Fatalf("container netns %q, want %q", r.stdout, want)
	}
}

func TestPrestart(t *testing.T) {
	root := needRoot(t)
	t.Run("runs in between", func(t *testing.T) {
		var seen string
		var out strings.Builder
		p := startContainer(t, sh(root, `hostname`), Options{
			Stdout: &out,
			Prestart: func(pid int) error {
				ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/uts", pid))
				seen = ns
				return err
			},
		})
		if code := waitContainer(t, p); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		own, _ := os.Readlink("/proc/self/ns/uts")
		if seen == "" || seen == own {
			t.Fatalf("Prestart saw uts namespace %q, the test's is %q", seen, own)
		}
	})
	t.Run("failure stops the container", func(t *testing.T) {
		before := hostMounts(t)
		var pid int
		_, err := Start(sh(root, `echo should not run`), Options{Prestart: func(p int) error {
			pid = p
			return errors.New("cni failed")
		}})
		if !errors.Is(err, ErrSetup) || !strings.Contains(err.Error(), "cni failed") {
			t.Fatalf("Start error %v", err)
		}
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Fatalf("setup child %d still exists: %v", pid, err)
		}
		checkMounts(t, before)
	})
}

func TestStartErrors(t *testing.T) {
	root := needRoot(t)
	tests := []struct {
		name    string
		spec    Spec
		is      error
		message string
	}{
		{"missing rootfs", Spec{Rootfs: "/nonexistent/rootfs", Args: []string{"sh"}}, ErrInvalidSpec, "/nonexistent/rootfs"},
		{"command not in rootfs", Spec{Rootfs: root, Args: []string{"bash"}}, ErrSetup, "bash: executable file not found"},
		{"missing volume source", Spec{Rootfs: root, Args: []string{"sh"}, Volumes: []Volume{{Source: "/nonexistent/vol", Target: "/v"}}}, ErrInvalidSpec, "/nonexistent/vol"},
		{"netns that is not one", Spec{Rootfs: root, Args: []string{"sh"}, NetNS: "/etc/hostname"}, ErrInvalidSpec, "not a network namespace"},
		{"symlinked /proc", Spec{Rootfs: symlinkedProcRoot(t), Args: []string{"sh"}}, ErrSetup, "/proc"},
		{"volume through a symlink to /proc", Spec{Rootfs: root, Args: []string{"sh"}, Volumes: []Volume{{Source: root, Target: "/proc-link/self"}}}, ErrSetup, "refusing to mount over /proc-link/self"},
	}
	if err := os.Symlink("/proc", filepath.Join(root, "proc-link")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(root, "proc-link")) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hostMounts(t)
			p, err := Start(tt.spec, Options{})
			if err == nil {
				_, _ = p.Wait()
				t.Fatal("Start succeeded")
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("error %q, want %v mentioning %q", err, tt.is, tt.message)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			checkMounts(t, before)
		})
	}
}

// symlinkedProcRoot is a rootfs whose /proc points at the host's /etc.
func symlinkedProcRoot(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Symlink("/etc", filepath.Join(dir, "proc")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPrivileged(t *testing.T) {
	root := needRoot(t)
	spec := sh(root, `grep CapEff /proc/self/status; mkdir -p /tmp/m; mount -t tmpfs none /tmp/m && echo mounted; grep -c ' /proc/sys ' /proc/self/mountinfo; true`)
	spec.Privileged = true
	r := runContainer(t, spec)
	mustSucceed(t, r)
	// Privileged keeps whatever the caller's bounding set allows.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	bnd := regexp.MustCompile(`CapBnd:\s*(\S+)`).FindSubmatch(status)[1]
	if want := fmt.Sprintf("CapEff:\t%s\nmounted\n0\n", bnd); r.stdout != want {
		t.Fatalf("output %q, want %q", r.stdout, want)
	}
}
