// Package initproc is the small init a container gets as PID 1 (the role of
// tini or docker-init): it starts the command, forwards signals to it, reaps
// every child that exits, orphans included, and exits with the command's
// status, 128+N when a signal N killed it.
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
	// Terminal makes the command the leader of a new session with stdin
	// as its controlling terminal, so the terminal's job control and its
	// signals (Ctrl-C) reach the command rather than the init.
	Terminal bool
}

// Signals are the init's signal subscriptions, made before the command
// starts so that neither its early exit nor an early signal is lost.
// SIGCHLD has its own one-slot channel: a pending value means a reap is
// due, and each reap collects every exited child.
type Signals struct {
	children, forward chan os.Signal
}

// Subscribe makes the init's subscriptions. os/signal enables each signal
// in a round trip with a thread of its own, a fraction of a millisecond
// in all: an init with other work to do first can subscribe on another
// goroutine meanwhile and hand the result to Run.
func Subscribe() *Signals {
	s := &Signals{children: make(chan os.Signal, 1), forward: make(chan os.Signal, 16)}
	signal.Notify(s.children, unix.SIGCHLD)
	signal.Notify(s.forward, Forwarded...)
	return s
}

// Run starts cmd and serves as its init until it exits; it returns the exit
// code to leave with. sigs are the subscriptions from Subscribe; nil makes
// Run subscribe. started is called once with the outcome of starting the
// command (nil on success), so the caller can report a failed execve
// before Run returns 127 (not found) or 126 (not runnable).
//
// Run reaps with wait4(-1), so it must own all children of the process. When
// the process is not PID 1 of a PID namespace, Run makes it a child
// subreaper so orphaned descendants are still reparented to it and reaped.
func Run(cmd Command, sigs *Signals, started func(error)) int {
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
	pid, err := syscall.ForkExec(cmd.Path, cmd.Args, &syscall.ProcAttr{
		Env:   cmd.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setsid: cmd.Terminal, Setctty: cmd.Terminal, Ctty: 0},
	})
	if err != nil {
		started(fmt.Errorf("starting %s: %w", cmd.Path, err))
		if errors.Is(err, syscall.ENOENT) {
			return 127
		}
		return 126
	}
	started(nil)

	for {
		select {
		case sig := <-sigs.forward:
			// ESRCH only means the command is gone and its SIGCHLD is pending.
			_ = unix.Kill(pid, sig.(unix.Signal))
		case <-sigs.children:
			if ws, done := reap(pid); done {
				return ExitCode(ws)
			}
		}
	}
}

// reap collects every exited child and reports the command's status once
// the command is among them.
func reap(pid int) (status syscall.WaitStatus, done bool) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || got <= 0 {
			return status, done
		}
		if got == pid {
			status, done = ws, true
		}
	}
}
