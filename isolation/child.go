package isolation

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/caps"
	"github.com/nsnet/nsnet/isolation/rootfs"
)

// Descriptors Start gives the setup child besides the sync channel: the
// network namespace to join and the socket the console's pty master is
// sent back on, when the container has them.
const (
	netnsFD   = 4
	consoleFD = 5
)

// runSetup is the setup child. It runs on one locked thread from start to
// execve because setns, capabilities and no_new_privs apply to the calling
// thread only, and execve keeps exactly that thread.
func runSetup() {
	runtime.LockOSThread()
	syncFile := os.NewFile(syncFD, "sync")
	ch := newChannel(syncFile)
	m, err := ch.expect(msgConfig)
	if err != nil || m.Config == nil {
		fmt.Fprintf(os.Stderr, "%s: no configuration from the parent: %v\n", setupArg0, err)
		os.Exit(ExitSetupFailed)
	}
	cfg := *m.Config
	fail := func(err error) {
		_ = ch.send(message{Type: msgError, Error: err.Error()})
		os.Exit(ExitSetupFailed)
	}
	prepared, err := setup(cfg)
	if err != nil {
		fail(err)
	}
	if err := ch.send(message{Type: msgReady}); err != nil {
		os.Exit(ExitSetupFailed)
	}
	if _, err := ch.expect(msgStart); err != nil {
		// The parent gave up (Prestart failed) or is gone.
		os.Exit(ExitSetupFailed)
	}
	fail(execute(cfg, prepared))
}

// prepared is what setup leaves for execute.
type prepared struct {
	path    string // the command, resolved inside the container
	initExe int    // descriptor of nsnet's binary, for the init; -1 without
}

// setup does everything that needs privilege: namespaces, hostname,
// loopback, the root filesystem and sysctls.
func setup(cfg childConfig) (prepared, error) {
	p := prepared{initExe: -1}
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return p, fmt.Errorf("creating the cgroup namespace: %w", err)
	}
	switch cfg.Net {
	case netJoin:
		if err := unix.Setns(netnsFD, unix.CLONE_NEWNET); err != nil {
			return p, fmt.Errorf("joining network namespace: %w", err)
		}
		unix.Close(netnsFD)
	case netNew:
		if err := loopbackUp(); err != nil {
			return p, err
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return p, fmt.Errorf("setting hostname: %w", err)
		}
	}
	if cfg.Init {
		// Opened while the host's tree is still visible; executed later
		// through /proc/self/fd, after the host's tree is gone.
		fd, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return p, fmt.Errorf("opening nsnet's binary for the init: %w", err)
		}
		p.initExe = fd
	}
	if err := rootfs.Setup(cfg.Rootfs); err != nil {
		return p, fmt.Errorf("rootfs: %w", err)
	}
	if cfg.Tty {
		if err := setupConsole(); err != nil {
			return p, err
		}
	}
	if err := writeSysctls(cfg.Sysctls); err != nil {
		return p, err
	}
	if err := rootfs.Harden(cfg.Rootfs); err != nil {
		return p, fmt.Errorf("rootfs: %w", err)
	}
	if err := unix.Chdir(cfg.Cwd); err != nil {
		return p, fmt.Errorf("working directory %s: %w", cfg.Cwd, err)
	}
	var err error
	if p.path, err = lookPath(cfg.Args[0], cfg.Env); err != nil {
		return p, err
	}
	return p, nil
}

// execute drops privileges and replaces the setup child with the init or
// the command. It returns only on failure.
func execute(cfg childConfig, p prepared) error {
	// Every descriptor but stdio (and the channel, which the init reports
	// on) is closed by execve: nothing of the host, such as a directory
	// that could serve as a way out (CVE-2024-21626), reaches the
	// container.
	first := syncFD
	if cfg.Init {
		first = syncFD + 1
	}
	if err := closeOnExecFrom(first); err != nil {
		return err
	}
	if cfg.Tty {
		// A new session, so the console can become a controlling
		// terminal: of the command here, or of the init's child.
		if _, err := unix.Setsid(); err != nil {
			return fmt.Errorf("starting a session: %w", err)
		}
		if !cfg.Init {
			if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
				return fmt.Errorf("taking the console as controlling terminal: %w", err)
			}
		}
	}
	unix.Umask(0o022)
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", err)
	}
	if !cfg.Privileged {
		if err := caps.Apply(cfg.Caps); err != nil {
			return err
		}
	}
	if cfg.Init {
		argv := append([]string{initArg0, p.path, "--"}, cfg.Args...)
		err := syscall.Exec("/proc/self/fd/"+strconv.Itoa(p.initExe), argv, cfg.Env)
		return fmt.Errorf("starting the init: %w", err)
	}
	err := syscall.Exec(p.path, cfg.Args, cfg.Env)
	return fmt.Errorf("exec %s: %w", p.path, err)
}

// setupConsole makes the container's terminal: a pty from the container's
// own devpts instance (so it shows up in its /dev/pts), the slave bound at
// /dev/console and made stdin, stdout and stderr, the master sent to the
// parent to relay.
func setupConsole() error {
	master, slave, slavePath, err := openPty()
	if err != nil {
		return err
	}
	defer unix.Close(master)
	defer unix.Close(slave)
	if err := unix.Mount(slavePath, "/dev/console", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s on /dev/console: %w", slavePath, err)
	}
	if err := sendConsole(consoleFD, master); err != nil {
		return err
	}
	unix.Close(consoleFD)
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return fmt.Errorf("attaching the console: %w", err)
		}
	}
	return nil
}

// closeOnExecFrom marks every descriptor from first up close-on-exec.
func closeOnExecFrom(first int) error {
	err := unix.CloseRange(uint(first), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil || !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing descriptors: %w", err)
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

// loopbackUp brings up lo in the new network namespace; the rest of the
// network is the caller's business (see Options.Prestart).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing up lo: %w", err)
	}
	return nil
}

// lookPath finds file the way a shell would, with the container's PATH,
// after the switch into the container's root.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", err
		}
		return file, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: executable file not found in $PATH", file)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: permission denied", p)
	}
	return nil
}
