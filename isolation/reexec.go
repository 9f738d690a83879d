package isolation

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/initproc"
)

// The argv[0] values Start gives the copies of the binary it runs. Start
// always executes /proc/self/exe, so these names never come from a path.
const (
	setupArg0 = "nsnet-setup"
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
// returns at once.
func Reexec() {
	switch os.Args[0] {
	case setupArg0:
		runSetup()
	case initArg0:
		runInit()
	case execJoinArg0:
		runExecJoin()
	case execArg0:
		runExec()
	}
}

// runInit is the built-in init: argv is [nsnet-init PATH -- ARGV...]. It
// reports the outcome of starting the command on the sync channel, which
// it closes so the command does not inherit it. A terminal on stdin is the
// container's console (Spec.Tty), handed on to the command.
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
	cmd := initproc.Command{Path: os.Args[1], Args: os.Args[3:], Env: os.Environ(), Terminal: isTerminal(0)}
	code := initproc.Run(cmd, func(err error) {
		if err != nil {
			_ = newChannel(syncFile).send(message{Type: msgError, Error: err.Error()})
		}
		syncFile.Close()
	})
	os.Exit(code)
}
