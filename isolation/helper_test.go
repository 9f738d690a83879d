package isolation

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// helperEnv names the program the test binary runs as inside a container;
// secretEnv is the host path of a file the container must not reach.
const (
	helperEnv = "NSNET_ISOLATION_TEST_HELPER"
	secretEnv = "NSNET_ISOLATION_TEST_SECRET"
)

var errHelper = errors.New("unknown helper")

func runHelper(name string) int {
	switch name {
	case "escape":
		for _, line := range escapeAttempts(os.Getenv(secretEnv)) {
			fmt.Println(line)
		}
		return 0
	case "rootless":
		return runRootless(os.Args[1], os.Args[2], os.Args[3:])
	case "rootless-exec":
		return runRootlessExec(os.Args[1], os.Args[2], os.Args[3:])
	case "exec-client":
		// Inside a container: ask its init, PID 1, for a command.
		_, err := Exec(1, ExecSpec{Args: []string{"true"}, Socket: os.Args[1]}, Options{})
		fmt.Println(err)
		return 0
	}
	fmt.Fprintln(os.Stderr, errHelper, name)
	return 2
}

// runRootless runs a user-namespaced container from an unprivileged
// process, as `nsnet run --userns` run by a normal user would.
func runRootless(root, volume string, args []string) int {
	spec := Spec{Rootfs: root, Args: args, UserNS: true, Init: true, Volumes: []Volume{{Source: volume, Target: "/mnt"}}}
	return exitCodeOf(Start(spec, Options{Stdout: os.Stdout, Stderr: os.Stderr}))
}

// exitCodeOf waits for a started p and returns its exit code, printing
// what went wrong on stderr; a failed start is ExitSetupFailed.
func exitCodeOf(p *Process, err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ExitSetupFailed
	}
	code, err := p.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// runRootlessExec starts a user-namespaced container from an unprivileged
// process, as runRootless, and execs args into it through its exec socket
// sock; it returns the exec'd command's exit code.
func runRootlessExec(root, sock string, args []string) int {
	spec := Spec{Rootfs: root, Args: []string{"sleep", "30"}, UserNS: true, Init: true, ExecSocket: sock}
	c, err := Start(spec, Options{Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return ExitSetupFailed
	}
	defer func() {
		_ = c.Signal(unix.SIGKILL)
		_, _ = c.Wait()
	}()
	return exitCodeOf(Exec(c.Pid, ExecSpec{Args: args, Socket: sock}, Options{Stdout: os.Stdout, Stderr: os.Stderr}))
}

// escapeAttempts tries the known ways out of a container's root and
// reports one line per attempt: "ok NAME" when it failed, "ESCAPED NAME:
// ..." when the host file was reached.
func escapeAttempts(secret string) []string {
	var out []string
	report := func(name string, reached bool, detail string) {
		if reached {
			out = append(out, "ESCAPED "+name+": "+detail)
		} else {
			out = append(out, "ok "+name)
		}
	}
	try := func(name, path string) {
		_, err := os.ReadFile(path)
		report(name, err == nil, path)
	}

	// Inherited descriptors are looked at first, before this process
	// opens anything; Go's runtime adds only anonymous inodes.
	fds, _ := os.ReadDir("/proc/self/fd")
	leaked := []string{}
	for _, fd := range fds {
		n, _ := strconv.Atoi(fd.Name())
		target, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if n <= 2 || err != nil || strings.HasPrefix(target, "anon_inode:") || target == "/proc/self/fd" {
			continue
		}
		leaked = append(leaked, fd.Name()+"->"+target)
	}
	report("fds", len(leaked) > 0, strings.Join(leaked, " "))

	try("direct", secret)
	try("dotdot-absolute", "/../../../../.."+secret)
	if err := os.Chdir("/"); err == nil {
		for i := 0; i < 32; i++ {
			_ = os.Chdir("..")
		}
		try("dotdot-cwd", "."+secret)
	}
	try("proc-1-root", "/proc/1/root"+secret)
	try("proc-self-root", "/proc/self/root"+secret)
	try("proc-1-cwd", "/proc/1/cwd/../../../.."+secret)

	err := unix.Mount("none", "/tmp", "tmpfs", 0, "")
	report("mount", err == nil, "mounted a tmpfs")

	// "shocker": open the host filesystem's root inode by handle.
	h := unix.NewFileHandle(1, []byte{2, 0, 0, 0, 0, 0, 0, 0})
	if fd, err := unix.OpenByHandleAt(unix.AT_FDCWD, h, unix.O_RDONLY); err == nil {
		unix.Close(fd)
		report("open_by_handle_at", true, "opened inode 2 by handle")
	} else {
		report("open_by_handle_at", false, "")
	}

	// The classic chroot escape: chroot into a subdirectory while the
	// working directory stays outside it, climb, chroot to where it ends.
	if err := os.MkdirAll("/tmp/jail", 0o755); err != nil {
		report("chroot", false, "")
		return out
	}
	if err := unix.Chroot("/tmp/jail"); err != nil {
		out = append(out, "chroot-denied "+err.Error())
		return out
	}
	for i := 0; i < 32; i++ {
		_ = unix.Chdir("..")
	}
	_ = unix.Chroot(".")
	try("chroot", secret)
	return out
}
