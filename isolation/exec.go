package isolation

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/caps"
	"github.com/nsnet/nsnet/isolation/initproc"
)

// The argv[0] values of the copies of the binary Exec runs: the go-between
// that joins the container's namespaces, and the exec child it starts in
// them.
const (
	execJoinArg0 = "nsnet-exec-join"
	execArg0     = "nsnet-exec"
)

// execExeFD is the exec child's descriptor of nsnet's binary, which it is
// executed through: the host path of the binary is not visible in the
// container's mount namespace.
const execExeFD = 4

// execTtyArg, after the PID, tells the go-between that descriptor
// consoleFD is the socket for the exec child's pty master.
const execTtyArg = "tty"

// execGateFD is the go-between's end of a pipe that Exec closes once
// Options.Place has moved the go-between into the container's cgroup; the
// go-between forks the exec child only then, so the child starts there.
const execGateFD = 4

// ExecSpec is a command to run in a running container, with the same
// defaults and hardening as the container's own command.
type ExecSpec struct {
	Args []string
	// Env gets PATH, HOME and HOSTNAME added when missing, as Spec.Env.
	Env      []string
	Cwd      string
	Hostname string
	// Tty gives the command a new pty of the container's devpts, relayed
	// to Options' stdio as Spec.Tty does.
	Tty bool
	// Privileged, CapAdd and CapDrop should be the container's, so the
	// command gets the same capability set. Not used with Socket: the
	// command then has the init's, which are the container's.
	Privileged      bool
	CapAdd, CapDrop []string
	// Socket is the container's Spec.ExecSocket, when it has one: its init
	// starts the command then, instead of a go-between that joins the
	// container's namespaces.
	Socket string
}

// nsOrder is the order the go-between joins the container's namespaces in: the mount
// namespace last, since opening the others needs the host's /proc.
var nsOrder = []struct {
	name string
	flag int
}{
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"net", unix.CLONE_NEWNET},
	{"pid", unix.CLONE_NEWPID},
	{"cgroup", unix.CLONE_NEWCGROUP},
	{"mnt", unix.CLONE_NEWNS},
}

// Exec runs spec in the namespaces of the container whose PID 1 has host
// PID pid, and returns once the command runs.
//
// With spec.Socket, the container's init starts the command as its child
// (see initexec.go), so it has all that the container's command has:
// every namespace, the user namespace included, the cgroup, the
// capability set and no_new_privs. Process.Pid is then the command's host
// PID (-1 if it has exited already), and Process.Signal signals it.
//
// Otherwise Process.Pid is the host PID of a go-between, which relays
// signals to the command and exits with its status. Joining is done by
// that go-between, a copy of the binary started with argv[0]
// execJoinArg0: on a locked thread, after unsharing the thread's
// filesystem attributes (which the kernel requires for the mount
// namespace), it joins the IPC, UTS, network, PID, cgroup and mount
// namespaces and forks another copy, the exec child, which starts inside
// all of them, applies the capability set and no_new_privs and execs the
// command. The caller's own threads never change namespace. A user
// namespace cannot be joined by a multi-threaded process, which every Go
// process is: for a container with one but without an exec socket (no
// init), the command runs with the host uid and gid the container's root
// maps to, which makes it that root to the container's files but gives it
// no capability in the container's user namespace.
func Exec(pid int, spec ExecSpec, opts Options) (*Process, error) {
	if len(spec.Args) == 0 || spec.Args[0] == "" {
		return nil, invalid("no command")
	}
	cwd := spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !strings.HasPrefix(cwd, "/") {
		return nil, invalid("working directory %q is not absolute", spec.Cwd)
	}
	env := defaultEnv(spec.Env, spec.Hostname)
	if spec.Socket != "" {
		return execByInit(pid, spec.Socket, execRequest{Args: spec.Args, Env: env, Cwd: cwd, Tty: spec.Tty}, opts)
	}
	set, err := caps.Resolve(spec.Privileged, spec.CapAdd, spec.CapDrop)
	if err != nil {
		return nil, invalid("%v", err)
	}
	cfg := childConfig{Args: spec.Args, Env: env, Cwd: cwd, Caps: set, Privileged: spec.Privileged, Tty: spec.Tty}

	parentEnd, childEnd, err := socketPair("nsnet-sync", "sync")
	if err != nil {
		return nil, err
	}
	defer parentEnd.Close()
	defer childEnd.Close()
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: creating the exec gate: %w", ErrSetup, err)
	}
	defer gateR.Close()
	defer gateW.Close()
	args := []string{execJoinArg0, strconv.Itoa(pid)}
	stdin, stdout := opts.Stdin, opts.Stdout
	extra := []*os.File{childEnd, gateR}
	var console *handover
	if spec.Tty {
		if console, err = newHandover(); err != nil {
			return nil, err
		}
		defer console.Close()
		extra = append(extra, console.child)
		args = append(args, execTtyArg)
		stdin, stdout = nil, nil
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        args,
		Env:         []string{},
		Stdin:       stdin,
		Stdout:      stdout,
		Stderr:      opts.Stderr,
		ExtraFiles:  extra,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: unix.SIGKILL},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: starting the exec go-between: %w", ErrSetup, err)
	}
	for _, f := range extra {
		f.Close()
	}
	p := &Process{Pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	if opts.Place != nil {
		if err = opts.Place(p.Pid); err != nil {
			err = fmt.Errorf("placing the exec'd command in the container's cgroup: %w", err)
		}
	}
	gateW.Close()
	ch := newChannel(parentEnd)
	if err == nil {
		err = ch.send(message{Type: msgConfig, Config: &cfg})
	}
	if err == nil && console != nil {
		// Sent just before the exec; when it does not come, the channel
		// says why.
		if aerr := console.attach(p, opts); aerr != nil && !errors.Is(aerr, errNoConsole) {
			err = aerr
		}
	}
	if err == nil {
		err = ch.closed()
	}
	if err != nil {
		_ = cmd.Process.Kill()
		_, _ = p.Wait()
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return p, nil
}

// runExecJoin is the go-between of Exec: argv is [nsnet-exec-join PID]. It
// never returns to anything else, so the namespaces its thread joins do
// not matter to other code.
func runExecJoin() {
	runtime.LockOSThread()
	fail := func(err error) {
		_ = newChannel(os.NewFile(syncFD, "sync")).send(message{Type: msgError, Error: err.Error()})
		os.Exit(ExitSetupFailed)
	}
	if len(os.Args) != 2 && (len(os.Args) != 3 || os.Args[2] != execTtyArg) {
		fail(fmt.Errorf("%s: usage: %s PID [%s]", execJoinArg0, execJoinArg0, execTtyArg))
	}
	pid, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fail(fmt.Errorf("%s: bad PID %q", execJoinArg0, os.Args[1]))
	}
	var nsFiles []*os.File
	for _, ns := range nsOrder {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name))
		if err != nil {
			fail(fmt.Errorf("opening the container's %s namespace: %w", ns.name, err))
		}
		nsFiles = append(nsFiles, f)
	}
	cred, err := userNSCredential(pid)
	if err != nil {
		fail(err)
	}
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		fail(fmt.Errorf("opening nsnet's binary: %w", err))
	}
	if err := joinNamespaces(nsFiles); err != nil {
		fail(err)
	}
	gate := os.NewFile(execGateFD, "gate")
	if _, err := io.Copy(io.Discard, gate); err != nil {
		fail(fmt.Errorf("waiting to be placed in the container's cgroup: %w", err))
	}
	gate.Close()
	extra := []*os.File{os.NewFile(syncFD, "sync"), exe}
	if len(os.Args) == 3 {
		extra = append(extra, os.NewFile(consoleFD, "console"))
	}
	// Subscribed before the fork so no signal is lost.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, initproc.Forwarded...)
	cmd := &exec.Cmd{
		Path:       "/proc/self/fd/" + strconv.Itoa(execExeFD),
		Args:       []string{execArg0},
		Env:        []string{},
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: extra,
		// No Pdeathsig here: Go's fork code would compare the child's
		// parent PID, 0 in the container's PID namespace, with ours and
		// kill the child at once. The child sets it itself.
		SysProcAttr: &syscall.SysProcAttr{Credential: cred},
	}
	if err := cmd.Start(); err != nil {
		fail(fmt.Errorf("starting the exec child: %w", err))
	}
	// The exec child holds the channel now; its execve closing it tells
	// Exec the command runs.
	unix.Close(syncFD)
	go func() {
		for sig := range sigs {
			_ = cmd.Process.Signal(sig)
		}
	}()
	_ = cmd.Wait()
	code := 255
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		code = initproc.ExitCode(ws)
	}
	os.Exit(code)
}

// joinNamespaces moves the calling (locked) thread into the namespaces.
func joinNamespaces(files []*os.File) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unsharing filesystem attributes: %w", err)
	}
	for i, f := range files {
		if err := unix.Setns(int(f.Fd()), nsOrder[i].flag); err != nil {
			return fmt.Errorf("joining the container's %s namespace: %w", nsOrder[i].name, err)
		}
	}
	return nil
}

// userNSCredential returns the host ids of the container's root when the
// container has its own user namespace, nil otherwise.
func userNSCredential(pid int) (*syscall.Credential, error) {
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the container's user namespace: %w", ErrSetup, err)
	}
	ours, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		return nil, fmt.Errorf("%w: reading our user namespace: %w", ErrSetup, err)
	}
	if theirs == ours {
		return nil, nil
	}
	uid, err := hostIDOfRoot(fmt.Sprintf("/proc/%d/uid_map", pid))
	if err != nil {
		return nil, err
	}
	gid, err := hostIDOfRoot(fmt.Sprintf("/proc/%d/gid_map", pid))
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// hostIDOfRoot reads the host id that id 0 maps to in a uid_map or gid_map.
func hostIDOfRoot(path string) (int, error) {
	maps, err := readIDMap(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	for _, m := range maps {
		if m.ContainerID <= 0 && 0 < m.ContainerID+m.Size {
			return m.HostID - m.ContainerID, nil
		}
	}
	return 0, fmt.Errorf("%w: %s does not map id 0", ErrSetup, path)
}

// readIDMap reads a uid_map or gid_map; HostID is the id in the user
// namespace above the one the map is of.
func readIDMap(path string) ([]IDMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var maps []IDMap
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		inside, err1 := strconv.Atoi(f[0])
		outside, err2 := strconv.Atoi(f[1])
		size, err3 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && err3 == nil {
			maps = append(maps, IDMap{ContainerID: inside, HostID: outside, Size: size})
		}
	}
	return maps, nil
}

// runExec is the exec child: in the container's namespaces already, it
// reads its configuration and becomes the command, reporting a failure on
// the sync channel and exiting 126 (127 when the command is not found).
func runExec() {
	runtime.LockOSThread()
	// Dies with the go-between; had it already gone, the configuration
	// below never arrives.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "%s: setting the parent-death signal: %v\n", execArg0, err)
		os.Exit(ExitSetupFailed)
	}
	ch := newChannel(os.NewFile(syncFD, "sync"))
	m, err := ch.expect(msgConfig)
	if err != nil || m.Config == nil {
		fmt.Fprintf(os.Stderr, "%s: no configuration from the parent: %v\n", execArg0, err)
		os.Exit(ExitSetupFailed)
	}
	cfg := *m.Config
	code := 126
	err = func() error {
		if err := unix.Chdir(cfg.Cwd); err != nil {
			return fmt.Errorf("working directory %s: %w", cfg.Cwd, err)
		}
		path, err := lookPath(".", cfg.Args[0], cfg.Env)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "not found") {
				code = 127
			}
			return err
		}
		if cfg.Tty {
			if err := execConsole(); err != nil {
				return err
			}
		}
		if err := closeOnExecFrom(syncFD); err != nil {
			return err
		}
		unix.Umask(0o022)
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("setting no_new_privs: %w", err)
		}
		if !cfg.Privileged && os.Geteuid() == 0 {
			if err := caps.Apply(cfg.Caps); err != nil {
				return err
			}
		}
		err = syscall.Exec(path, cfg.Args, cfg.Env)
		return fmt.Errorf("exec %s: %w", path, err)
	}()
	_ = ch.send(message{Type: msgError, Error: err.Error()})
	os.Exit(code)
}

// execConsole gives the exec child a new pty of the container's devpts as
// its terminal and sends the master to Exec.
func execConsole() error {
	master, slave, _, err := openPty()
	if err != nil {
		return err
	}
	defer unix.Close(slave)
	err = sendConsole(consoleFD, master)
	unix.Close(master)
	unix.Close(consoleFD)
	if err != nil {
		return err
	}
	return takeTerminal(slave)
}
