package isolation

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/initproc"
)

// ErrSetup marks a container that could not be started: a namespace, mount,
// capability or exec step failed. The message names the step.
var ErrSetup = errors.New("container setup failed")

// Options are the parts of starting a container that are not data.
type Options struct {
	// Stdin, Stdout and Stderr are the command's; nil means /dev/null.
	// *os.File values are passed through as they are (a terminal stays a
	// terminal); other values go through pipes.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Prestart, when set, runs once the container's namespaces exist and
	// before its command starts, with the host PID of the container's
	// PID 1: /proc/PID/ns/net is its network namespace. This is the OCI
	// createRuntime point, where CNI ADD belongs. It runs while the child
	// builds the root filesystem, so it must not depend on that (files
	// bound into the container are rewritten in place, not replaced). An
	// error stops the container and is returned by Start.
	Prestart func(pid int) error
	// Place, when set, runs right after the container's PID 1 (or an exec
	// go-between) is created and before it does anything: the place to
	// move it into the container's cgroup. The container's cgroup
	// namespace is created after Place, so the container sees that
	// cgroup as its root. An error stops the start. A command the
	// container's init starts (ExecSpec.Socket) is in the init's cgroup
	// from its fork: Exec does not call Place for it.
	Place func(pid int) error
	// CgroupDir (cgroup v2) is a cgroup the container's PID 1 is cloned
	// into; CgroupTasks (v1) are "tasks" files of the cgroups it is
	// born in (the thread that forks it enters them first). Either way it
	// never has to be moved, which costs the kernel an RCU grace period.
	// Use one of them or Place.
	CgroupDir   string
	CgroupTasks []string
}

// Process is a started container.
type Process struct {
	// Pid is the host PID of the container's PID 1 (the init, or the
	// command without one).
	Pid int

	cmd *exec.Cmd
	// byInit, in place of cmd, is a command the container's init started
	// for Exec.
	byInit  *initExec
	console *console // with Spec.Tty
	// execSocket is Spec.ExecSocket, for Wait to remove.
	execSocket string
	waitOnce   sync.Once
	code       int
	waitErr    error
	done       chan struct{}
}

// Start creates the container's namespaces and root filesystem and starts
// its command. It returns once the command runs; an error means nothing is
// left behind. Errors wrap ErrInvalidSpec (refused before anything was
// created) or ErrSetup.
//
// The caller's binary must call Reexec first thing in main: Start runs
// /proc/self/exe as the setup child. The container is killed when the
// calling process ends (PR_SET_PDEATHSIG).
func Start(spec Spec, opts Options) (*Process, error) {
	cfg, err := spec.resolve()
	if err != nil {
		return nil, err
	}
	parentEnd, childEnd, err := socketPair("nsnet-sync", "sync")
	if err != nil {
		return nil, err
	}
	defer parentEnd.Close()
	defer childEnd.Close()

	// Fixed descriptor numbers in the child: 3 sync, 4 netns, 5 console,
	// 6 exec socket; a nil entry leaves its number closed.
	extra := []*os.File{childEnd, nil, nil}
	if cfg.Net == netJoin {
		f, err := openNetNS(spec.NetNS)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		extra[netnsFD-syncFD] = f
	}
	var console *handover
	stdin, stdout := opts.Stdin, opts.Stdout
	if cfg.Tty {
		if console, err = newHandover(); err != nil {
			return nil, err
		}
		defer console.Close()
		extra[consoleFD-syncFD] = console.child
		// The command's stdio is the pty; the setup child keeps only
		// stderr, for errors before the configuration arrives.
		stdin, stdout = nil, nil
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{setupArg0},
		Env:         []string{},
		Stdin:       stdin,
		Stdout:      stdout,
		Stderr:      opts.Stderr,
		ExtraFiles:  extra,
		SysProcAttr: sysProcAttr(spec, cfg.Net),
	}
	// A child born in its cgroup gets its cgroup namespace at clone, on
	// every thread. One moved later (Place), or cloned into a cgroup other
	// than the forking thread's (CgroupDir: the kernel roots a namespace
	// made at clone in the parent's cgroup), makes it once it is there.
	if opts.Place == nil && opts.CgroupDir == "" {
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWCGROUP
		cfg.CgroupNSCloned = true
	}
	if opts.CgroupDir != "" {
		dir, err := os.Open(opts.CgroupDir)
		if err != nil {
			return nil, fmt.Errorf("%w: opening the container's cgroup: %w", ErrSetup, err)
		}
		defer dir.Close()
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(dir.Fd())
	}
	if cfg.ExecSocket {
		sock, err := bindExecSocket(spec.ExecSocket)
		if err != nil {
			return nil, err
		}
		defer sock.Close()
		extra = append(extra, sock)
		cmd.ExtraFiles = extra
	}
	p := &Process{cmd: cmd, execSocket: spec.ExecSocket, done: make(chan struct{})}
	tid, err := forkChild(cmd, opts.CgroupTasks)
	if err != nil {
		// The thread may hold the container's cgroups busy.
		waitThreadEnd(tid)
		p.removeExecSocket()
		return nil, fmt.Errorf("%w: starting the setup child: %w", ErrSetup, err)
	}
	for _, f := range extra[1:] {
		if f != nil {
			f.Close()
		}
	}
	childEnd.Close()
	p.Pid = cmd.Process.Pid
	if err := p.setup(newChannel(parentEnd), cfg, console, opts, tid); err != nil {
		_ = cmd.Process.Kill()
		code, _ := p.Wait()
		if errors.Is(err, errChildClosed) {
			err = fmt.Errorf("setup child exited with code %d", code)
		}
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return p, nil
}

// removeExecSocket removes the container's exec socket, which Start made.
func (p *Process) removeExecSocket() {
	if p.execSocket != "" {
		_ = os.Remove(p.execSocket)
	}
}

func (p *Process) setup(ch *channel, cfg childConfig, console *handover, opts Options, forker int) error {
	if opts.Place != nil {
		if err := opts.Place(p.Pid); err != nil {
			return fmt.Errorf("placing the container in its cgroup: %w", err)
		}
	}
	if err := ch.send(message{Type: msgConfig, Config: &cfg}); err != nil {
		return err
	}
	// The network namespace exists since the clone: CNI ADD overlaps the
	// child's mounts. Start waits for it even when the child fails, so the
	// caller knows whether there is an attachment to undo.
	var prestart chan error
	if opts.Prestart != nil {
		prestart = make(chan error, 1)
		go func() { prestart <- opts.Prestart(p.Pid) }()
	}
	err := p.ready(ch, console, opts)
	if prestart != nil {
		if perr := <-prestart; perr != nil && err == nil {
			err = fmt.Errorf("prestart: %w", perr)
		}
	}
	waitThreadEnd(forker)
	if err != nil {
		return err
	}
	// The child arms its parent-death signal on this message, now that
	// the thread that forked it is gone (see forkChild).
	if err := ch.send(message{Type: msgStart}); err != nil {
		return err
	}
	return ch.closed()
}

// ready waits for the setup child to report its root filesystem done and,
// with a terminal, takes over the console it sent before.
func (p *Process) ready(ch *channel, console *handover, opts Options) error {
	if _, err := ch.expect(msgReady); err != nil {
		return err
	}
	if console == nil {
		return nil
	}
	return console.attach(p, opts)
}

func sysProcAttr(spec Spec, net netMode) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWPID |
			unix.CLONE_NEWNS,
	}
	if net == netNew {
		attr.Cloneflags |= unix.CLONE_NEWNET
	}
	if spec.UserNS {
		attr.Cloneflags |= unix.CLONE_NEWUSER
		attr.UidMappings = idMaps(spec.UIDMap, os.Geteuid())
		attr.GidMappings = idMaps(spec.GIDMap, os.Getegid())
		// An unprivileged caller may only write gid_map after denying
		// setgroups; root keeps setgroups usable inside.
		attr.GidMappingsEnableSetgroups = os.Geteuid() == 0
		// The child keeps the caller's host ids, which the maps need not
		// cover; execve would then treat it as an unmapped non-root user
		// and drop every capability. Becoming root of the namespace first
		// (allowed: the child owns it) makes the setup child root there.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: !attr.GidMappingsEnableSetgroups}
	}
	return attr
}

// idMaps defaults to mapping the caller's id to 0 inside.
func idMaps(maps []IDMap, callerID int) []syscall.SysProcIDMap {
	if len(maps) == 0 {
		return []syscall.SysProcIDMap{{ContainerID: 0, HostID: callerID, Size: 1}}
	}
	out := make([]syscall.SysProcIDMap, len(maps))
	for i, m := range maps {
		out[i] = syscall.SysProcIDMap{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size}
	}
	return out
}

// openNetNS opens a network namespace to hand to the setup child, which
// joins it by descriptor: a path like /proc/self/... would mean something
// else in the child.
func openNetNS(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: network namespace: %w", ErrInvalidSpec, err)
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a network namespace", ErrInvalidSpec, path)
	}
	return f, nil
}

// Signal sends sig to the container's PID 1. Without an init, the kernel
// delivers only signals the command handles, plus SIGKILL and SIGSTOP.
func (p *Process) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	if p.byInit != nil {
		return p.byInit.signal(sig)
	}
	return p.cmd.Process.Signal(sig)
}

// ForwardSignals relays the given signals (SIGINT, SIGTERM and SIGHUP when
// none are given) from the calling process to the container until Wait
// returns. While it is active those signals no longer stop the caller.
func (p *Process) ForwardSignals(sigs ...os.Signal) {
	if len(sigs) == 0 {
		sigs = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP}
	}
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, sigs...)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case sig := <-ch:
				_ = p.Signal(sig)
			case <-p.done:
				return
			}
		}
	}()
}

// Wait waits for the container's PID 1 to exit and returns its exit code,
// 128+N when signal N killed it. With an init that is the command's status.
// When PID 1 exits the kernel kills whatever else runs in the container.
// err reports only a failure to wait or to copy stdio, never the exit code.
func (p *Process) Wait() (code int, err error) {
	p.waitOnce.Do(func() {
		if p.byInit != nil {
			p.code, p.waitErr = p.byInit.wait()
		} else {
			p.code, p.waitErr = waitCmd(p.cmd)
		}
		if p.console != nil {
			p.console.close()
		}
		p.removeExecSocket()
		close(p.done)
	})
	return p.code, p.waitErr
}

// waitCmd waits for cmd and returns its exit code, -1 when it never ran.
func waitCmd(cmd *exec.Cmd) (int, error) {
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil
	}
	if cmd.ProcessState == nil {
		return -1, err
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return initproc.ExitCode(ws), err
}
