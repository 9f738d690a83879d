package isolation

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/initproc"
)

// The argv[0] values Start gives the copies of the binary it runs. Start
// always executes /proc/self/exe, so these names never come from a path.
// The setup child bears the init's name because it becomes the
// container's init (see becomeInit), and ps inside shows PID 1 so; it
// gets no arguments, unlike an init it executes.
const (
	setupArg0 = initArg0
	initArg0  = "nsnet-init"
)

// syncFD is the child's end of the parent/child channel.
const syncFD = 3

// ExitSetupFailed is the exit code for a container that could not be
// started, as docker and podman use it: the setup child exits with it, and
// a CLI should exit with it when Start fails.
const ExitSetupFailed = 125

// Reexec must be the first thing main (and a test binary's TestMain) does.
// In a process Start or Exec created as a container's setup child, init or
// exec child it performs that role and never returns; anywhere else it
// returns at once. Such a process already takes its role while this
// package is initialized (see init), so there the call is only a
// safeguard.
func Reexec() {
	switch os.Args[0] {
	case initArg0:
		if len(os.Args) == 1 {
			runSetup()
		}
		runInit()
	case execJoinArg0:
		runExecJoin()
	case execArg0:
		runExec()
	}
}

// init takes the role of a re-executed copy before main: Go initializes a
// package once its imports are, in import path order, so packages outside
// this one's dependencies (libcni with OpenTelemetry and net/http,
// netlink, nftables, cgroup drivers, cobra) are not initialized yet. A
// setup child or exec go-between uses nothing but these dependencies and
// skips about a millisecond of initialization.
func init() { Reexec() }

// runInit is the built-in init as a setup child executes it when it cannot
// become the init itself (in a binary using cgo): argv is
// [nsnet-init PATH -- ARGV...]. It reports the outcome of starting the
// command on the sync channel, which it closes so the command does not
// inherit it. A terminal on stdin is the container's console (Spec.Tty),
// handed on to the command. A listening socket at execSocketFD, which
// lockDown leaves open only for a container with one, is the exec socket.
func runInit() {
	if len(os.Args) < 4 || os.Args[2] != "--" {
		fmt.Fprintf(os.Stderr, "%s: usage: %s PATH -- ARGV...\n", initArg0, initArg0)
		os.Exit(ExitSetupFailed)
	}
	// The init was executed through /proc/self/fd/N, which made its name
	// "N" in ps; a failure here is only cosmetic.
	_ = os.WriteFile("/proc/self/comm", []byte(initArg0), 0)
	unix.CloseOnExec(syncFD)
	syncFile := os.NewFile(syncFD, "sync")
	report := reportStart(newChannel(syncFile), syncFile)
	listening, err := unix.GetsockoptInt(execSocketFD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	hasSocket := err == nil && listening == 1
	if hasSocket {
		unix.CloseOnExec(execSocketFD)
	}
	serve, err := execServe(hasSocket)
	if err != nil {
		report(err)
		os.Exit(ExitSetupFailed)
	}
	cmd := initproc.Command{Path: os.Args[1], Args: os.Args[3:], Env: os.Environ(), Terminal: isTerminal(0)}
	os.Exit(initproc.Run(cmd, nil, report, serve))
}
