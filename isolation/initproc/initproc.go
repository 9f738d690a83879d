// Package initproc is the small init a container gets as PID 1 (the role of
// tini or docker-init): it starts the command, forwards signals to it, reaps
// every child that exits, orphans included, and exits with the command's
// status, 128+N when a signal N killed it. On its caller's request it also
// starts further commands as its children (see Children), which so get
// everything the init has, a user namespace included.
//
// A PID 1 without such an init is the command itself: the kernel then drops
// every signal it has no handler for (SIGTERM included, even from the host)
// and orphans of the command stay zombies unless it waits for them.
package initproc

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Forwarded lists the signals the init passes on to the command.
var Forwarded = []os.Signal{
	unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH,
}

// ExitCode turns a wait status into a shell-style exit code.
func ExitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return 255
	}
}

// Command is what the init starts.
type Command struct {
	Path string
	Args []string // Args[0] included
	Env  []string
	// Dir is the working directory; empty keeps the init's.
	Dir string
	// Files become the command's descriptors 0, 1, 2...; nil passes the
	// init's stdio on.
	Files []int
	// Terminal makes the command the leader of a new session with its
	// stdin as controlling terminal, so the terminal's job control and its
	// signals (Ctrl-C) reach the command rather than the init.
	Terminal bool
}

// Signals are the init's signal subscriptions, made before the command
// starts so that no early signal is lost. Children are collected by a
// blocking wait4 instead of on SIGCHLD: the kernel wakes the waiting
// thread directly, where a signal would go through os/signal's thread and
// two goroutines first.
type Signals struct {
	forward chan os.Signal
}

// Subscribe makes the init's subscriptions. os/signal enables each signal
// in a round trip with a thread of its own, a fraction of a millisecond
// in all: an init with other work to do first can subscribe on another
// goroutine meanwhile and hand the result to Run.
func Subscribe() *Signals {
	s := &Signals{forward: make(chan os.Signal, 16)}
	signal.Notify(s.forward, Forwarded...)
	return s
}

// startFailureCode is the exit code a shell gives a command it could not
// start: 127 when it was not found, 126 otherwise.
func startFailureCode(err error) int {
	if errors.Is(err, syscall.ENOENT) {
		return 127
	}
	return 126
}

// Children starts further children of a running init, such as commands
// executed in the container on request. The init reaps them with the
// others and hands each one's wait status to whoever started it.
type Children struct {
	start chan startRequest
	done  chan struct{} // closed when Run returns
}

type startRequest struct {
	cmd   Command
	reply chan<- startReply
}

type startReply struct {
	pidfd  int
	exited <-chan syscall.WaitStatus
	err    error
}

// ErrInitDone: the init's command exited, the init starts nothing more.
var ErrInitDone = errors.New("the init is exiting")

// Start starts cmd as a child of the init. It returns a pidfd of the child
// (close-on-exec; the caller closes it) and a channel that receives the
// child's wait status once the init has reaped it.
func (c *Children) Start(cmd Command) (pidfd int, exited <-chan syscall.WaitStatus, err error) {
	reply := make(chan startReply, 1)
	select {
	case c.start <- startRequest{cmd: cmd, reply: reply}:
	case <-c.done:
		return -1, nil, ErrInitDone
	}
	r := <-reply
	return r.pidfd, r.exited, r.err
}

// Run starts cmd and serves as its init until it exits; it returns the exit
// code to leave with. sigs are the subscriptions from Subscribe; nil makes
// Run subscribe. started is called once with the outcome of starting the
// command (nil on success), so the caller can report a failed execve
// before Run returns 127 (not found) or 126 (not runnable). serve, when
// not nil, runs in a goroutine of its own once the command runs, to start
// further children through the Children it is given.
//
// Every child is forked from the goroutine that called Run, on its thread:
// a caller that locked it to a thread whose attributes (a capability
// bounding set, say) the others lack gives them to every child.
//
// Run reaps with wait4(-1), so it must own all children of the process. When
// the process is not PID 1 of a PID namespace, Run makes it a child
// subreaper so orphaned descendants are still reparented to it and reaped.
func Run(cmd Command, sigs *Signals, started func(error), serve func(*Children)) int {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			started(fmt.Errorf("becoming a child subreaper: %w", err))
			return 126
		}
	}
	// Non-dumpable keeps the container's processes (which hold the same
	// credentials) from opening /proc/1/exe or /proc/1/mem of the init.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		started(fmt.Errorf("making the init non-dumpable: %w", err))
		return 126
	}

	if sigs == nil {
		sigs = Subscribe()
	}
	// Held across a fork and the child's registration, so the reaper
	// finds every child it collects registered.
	var mu sync.Mutex
	waiting := map[int]chan<- syscall.WaitStatus{}
	mu.Lock()
	pid, err := forkExec(cmd, nil)
	mu.Unlock()
	if err != nil {
		started(fmt.Errorf("starting %s: %w", cmd.Path, err))
		return startFailureCode(err)
	}
	started(nil)

	exited := make(chan syscall.WaitStatus, 1)
	go reap(pid, &mu, waiting, exited)
	children := &Children{start: make(chan startRequest), done: make(chan struct{})}
	defer close(children.done)
	if serve != nil {
		go serve(children)
	}
	for {
		select {
		case sig := <-sigs.forward:
			// ESRCH only means the command is gone and the reaper is
			// about to report it.
			_ = unix.Kill(pid, sig.(unix.Signal))
		case ws := <-exited:
			return ExitCode(ws)
		case req := <-children.start:
			req.reply <- startChild(req.cmd, &mu, waiting)
		}
	}
}

// startChild forks a child for Children.Start and registers it in waiting.
func startChild(cmd Command, mu *sync.Mutex, waiting map[int]chan<- syscall.WaitStatus) startReply {
	pidfd := -1
	mu.Lock()
	defer mu.Unlock()
	pid, err := forkExec(cmd, &pidfd)
	if err != nil {
		return startReply{pidfd: -1, err: fmt.Errorf("starting %s: %w", cmd.Path, err)}
	}
	if pidfd < 0 {
		// The child runs and is reaped; without a pidfd the caller
		// could not signal it safely, so it goes.
		_ = unix.Kill(pid, unix.SIGKILL)
		return startReply{pidfd: -1, err: errors.New("the kernel returned no pidfd for the child")}
	}
	exited := make(chan syscall.WaitStatus, 1)
	waiting[pid] = exited
	return startReply{pidfd: pidfd, exited: exited}
}

// forkExec starts cmd; a non-nil pidfd receives a pidfd of the child.
func forkExec(cmd Command, pidfd *int) (int, error) {
	files := []uintptr{0, 1, 2}
	if cmd.Files != nil {
		files = make([]uintptr, len(cmd.Files))
		for i, fd := range cmd.Files {
			files[i] = uintptr(fd)
		}
	}
	return syscall.ForkExec(cmd.Path, cmd.Args, &syscall.ProcAttr{
		Dir:   cmd.Dir,
		Env:   cmd.Env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setsid: cmd.Terminal, Setctty: cmd.Terminal, Ctty: 0, PidFD: pidfd},
	})
}

// reap collects every child that exits, orphans included, until the
// command does: it hands the status of one started through Children to its
// channel and sends the command's to main.
func reap(pid int, mu *sync.Mutex, waiting map[int]chan<- syscall.WaitStatus, main chan<- syscall.WaitStatus) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// ECHILD: something else in the process reaped the
			// command, whose status is lost.
			main <- syscall.WaitStatus(255 << 8)
			return
		}
		if got == pid {
			main <- ws
			return
		}
		mu.Lock()
		if exited, ok := waiting[got]; ok {
			exited <- ws
			delete(waiting, got)
		}
		mu.Unlock()
	}
}
