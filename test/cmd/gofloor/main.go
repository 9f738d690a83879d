// Command gofloor is the least a Go program can do to start a command the way nsnet run
// does, for runbench to show the floor of that design next to the runtimes it is compared
// with: no mounts, no cgroups, no state, no hardening, only the namespaces nsnet makes (mount,
// PID, network, UTS, IPC, cgroup), a chroot into the rootfs and the exec.
//
//	gofloor ROOTFS CMD [ARG...]        one Go start: CMD is cloned into the namespaces
//	gofloor -reexec ROOTFS CMD [ARG...] two Go starts: this program is executed again in the
//	                                    namespaces and that copy executes CMD, as nsnet's
//	                                    re-executed setup child (and init) does
//
// The exit status is CMD's.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// childArg marks the re-executed copy.
const childArg = "gofloor-child"

const cloneFlags = syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET |
	syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWCGROUP

func main() {
	args := os.Args[1:]
	if len(args) > 2 && args[0] == childArg {
		if err := syscall.Chroot(args[1]); err != nil {
			fail(err)
		}
		if err := syscall.Chdir("/"); err != nil {
			fail(err)
		}
		fail(syscall.Exec(args[2], args[2:], os.Environ()))
	}
	reexec := len(args) > 0 && args[0] == "-reexec"
	if reexec {
		args = args[1:]
	}
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gofloor [-reexec] ROOTFS CMD [ARG...]")
		os.Exit(2)
	}
	var cmd *exec.Cmd
	attr := &syscall.SysProcAttr{Cloneflags: cloneFlags, Pdeathsig: syscall.SIGKILL}
	if reexec {
		cmd = exec.Command("/proc/self/exe", append([]string{childArg}, args...)...)
	} else {
		cmd = exec.Command(args[1], args[2:]...)
		cmd.Path = args[1]
		attr.Chroot = args[0]
		cmd.Dir = "/"
	}
	cmd.SysProcAttr = attr
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.ExitCode())
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gofloor:", err)
	os.Exit(125)
}
