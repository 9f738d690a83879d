package isolation

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/caps"
	"github.com/nsnet/nsnet/isolation/initproc"
	"github.com/nsnet/nsnet/isolation/rootfs"
)

// Descriptors Start gives the setup child besides the sync channel: the
// network namespace to join, the socket the console's pty master is sent
// back on and the bound exec socket, when the container has them.
const (
	netnsFD      = 4
	consoleFD    = 5
	execSocketFD = 6
)

// runSetup is the setup child. It runs on one locked thread from start to
// execve (or, as the init, to its exit) because setns, capabilities and
// no_new_privs apply to the calling thread only, and execve keeps exactly
// that thread.
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
	// The init's signal subscriptions are made meanwhile, on another
	// thread.
	var sigs chan *initproc.Signals
	if cfg.Init {
		sigs = make(chan *initproc.Signals, 1)
		go func() { sigs <- initproc.Subscribe() }()
	}
	fail := func(err error) {
		_ = ch.send(message{Type: msgError, Error: err.Error()})
		os.Exit(ExitSetupFailed)
	}
	prepared, err := setup(cfg)
	if err != nil {
		fail(err)
	}
	prepared.signals = sigs
	// Privileges go before the parent is told the child is ready: with a
	// CNI network the parent still runs ADD, which this overlaps.
	launch, err := lockDown(cfg, prepared, ch, syncFile)
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
	// The parent sends the start once the thread that forked this child
	// has ended (see forkChild), so the signal is tied to its main thread.
	// A parent that died before the signal was armed has closed its end
	// of the channel, which it otherwise keeps open until the command
	// runs.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fail(fmt.Errorf("arming the parent-death signal: %w", err))
	}
	if peerClosed(syncFD) {
		os.Exit(ExitSetupFailed)
	}
	fail(launch())
}

// prepared is what setup leaves for lockDown.
type prepared struct {
	path    string // the command, resolved inside the container
	initExe int    // descriptor of nsnet's binary, for the init; -1 without
	// threadNS are the namespaces setup entered on its thread alone,
	// after clone: the other threads are still outside them.
	threadNS []threadNS
	// signals delivers the init's signal subscriptions (with Init).
	signals chan *initproc.Signals
}

// threadNS is a namespace type one thread of a process can enter alone.
type threadNS struct {
	name string // in /proc/PID/ns
	flag int
}

// setup does everything that needs privilege: namespaces, hostname,
// loopback, the root filesystem and sysctls.
func setup(cfg childConfig) (prepared, error) {
	p := prepared{initExe: -1}
	if !cfg.CgroupNSCloned {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return p, fmt.Errorf("creating the cgroup namespace: %w", err)
		}
		p.threadNS = append(p.threadNS, threadNS{"cgroup", unix.CLONE_NEWCGROUP})
	}
	if cfg.ExecSocket {
		// Listening here, not in Start, makes the init the socket's peer
		// (SO_PEERCRED) that Exec checks. Close-on-exec: the init keeps
		// it, the command does not get it.
		unix.CloseOnExec(execSocketFD)
		if err := unix.Listen(execSocketFD, 16); err != nil {
			return p, fmt.Errorf("listening on the exec socket: %w", err)
		}
	}
	switch cfg.Net {
	case netJoin:
		if err := unix.Setns(netnsFD, unix.CLONE_NEWNET); err != nil {
			return p, fmt.Errorf("joining network namespace: %w", err)
		}
		unix.Close(netnsFD)
		p.threadNS = append(p.threadNS, threadNS{"net", unix.CLONE_NEWNET})
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
	if p.path, err = lookPath(".", cfg.Args[0], cfg.Env); err != nil {
		return p, err
	}
	return p, nil
}

// lockDown drops privileges and returns what then starts the container:
// it replaces the setup child with the command, or makes it the init, and
// returns only on failure.
func lockDown(cfg childConfig, p prepared, ch *channel, syncFile *os.File) (launch func() error, err error) {
	if cfg.Init {
		launch, err := becomeInit(cfg, p, ch, syncFile)
		if !errors.Is(err, unix.ENOTSUP) {
			return launch, err
		}
	}
	// Every descriptor but stdio (and the channel, which the init reports
	// on) is closed by execve: nothing of the host, such as a directory
	// that could serve as a way out (CVE-2024-21626), reaches the
	// container.
	first := syncFD
	if cfg.Init {
		first = syncFD + 1
	}
	if err := closeOnExecFrom(first); err != nil {
		return nil, err
	}
	if cfg.ExecSocket {
		// For the init executed below, which takes it up (runInit).
		if _, err := unix.FcntlInt(execSocketFD, unix.F_SETFD, 0); err != nil {
			return nil, fmt.Errorf("passing the exec socket to the init: %w", err)
		}
	}
	if cfg.Tty {
		// A new session, so the console can become a controlling
		// terminal: of the command here, or of the init's child.
		if _, err := unix.Setsid(); err != nil {
			return nil, fmt.Errorf("starting a session: %w", err)
		}
		if !cfg.Init {
			if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
				return nil, fmt.Errorf("taking the console as controlling terminal: %w", err)
			}
		}
	}
	unix.Umask(0o022)
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("setting no_new_privs: %w", err)
	}
	if !cfg.Privileged {
		if err := caps.Apply(cfg.Caps); err != nil {
			return nil, err
		}
	}
	if cfg.Init {
		return func() error {
			argv := append([]string{initArg0, p.path, "--"}, cfg.Args...)
			err := syscall.Exec("/proc/self/fd/"+strconv.Itoa(p.initExe), argv, cfg.Env)
			return fmt.Errorf("starting the init: %w", err)
		}, nil
	}
	return func() error {
		err := syscall.Exec(p.path, cfg.Args, cfg.Env)
		return fmt.Errorf("exec %s: %w", p.path, err)
	}, nil
}

// becomeInit makes the setup child the container's init, where it would
// otherwise execute a fresh copy of nsnet for it: one Go runtime start
// less per container. This init must hold no more than an executed one
// would, but the Go runtime runs on several threads, and namespaces,
// no_new_privs and capabilities belong to each thread: so every thread
// gets no_new_privs, joins the namespaces this one entered after clone
// and is reduced to the container's capabilities (caps.ApplyAllThreads).
// That takes syscall.AllThreadsSyscall, which fails with ENOTSUP in a
// binary using cgo, before anything changed: the caller then executes the
// init. Otherwise the returned launch runs the init, forking the command
// from this locked thread, and exits with the command's status; it returns
// only on failure.
func becomeInit(cfg childConfig, p prepared, ch *channel, syncFile *os.File) (launch func() error, err error) {
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); errno != 0 {
		if errno == unix.ENOTSUP {
			return nil, errno
		}
		return nil, fmt.Errorf("setting no_new_privs: %w", errno)
	}
	if err := joinThreadNamespaces(p.threadNS); err != nil {
		return nil, err
	}
	unix.Close(p.initExe)
	if err := closeInherited(); err != nil {
		return nil, err
	}
	// Open to report the start of the command, which does not inherit it.
	unix.CloseOnExec(syncFD)
	if cfg.Tty {
		// A new session, so the console can become the controlling
		// terminal of the command.
		if _, err := unix.Setsid(); err != nil {
			return nil, fmt.Errorf("starting a session: %w", err)
		}
	}
	unix.Umask(0o022)
	if !cfg.Privileged {
		if err := caps.ApplyAllThreads(cfg.Caps); err != nil {
			return nil, err
		}
	}
	// The init is nsnet's host binary: with the process non-dumpable,
	// /proc/1/exe cannot be opened from inside (CAP_SYS_PTRACE would be
	// needed), so the binary cannot be rewritten from there
	// (CVE-2019-5736).
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("making the init non-dumpable: %w", err)
	}
	// ps shows the init by this name; a failure is only cosmetic.
	_ = os.WriteFile("/proc/self/comm", []byte(initArg0), 0)
	serve, err := execServe(cfg.ExecSocket)
	if err != nil {
		return nil, err
	}
	return func() error {
		cmd := initproc.Command{Path: p.path, Args: cfg.Args, Env: cfg.Env, Terminal: isTerminal(0)}
		os.Exit(initproc.Run(cmd, <-p.signals, reportStart(ch, syncFile), serve))
		return nil
	}, nil
}

// reportStart is the init's report of its command's start
// (initproc.Run's started): a failure goes to the parent on the sync
// channel, which is closed either way so the command does not hold it.
func reportStart(ch *channel, syncFile *os.File) func(error) {
	return func(err error) {
		if err != nil {
			_ = ch.send(message{Type: msgError, Error: err.Error()})
		}
		syncFile.Close()
	}
}

// execServe is what serves the exec socket at execSocketFD for the init,
// or nil without one.
func execServe(on bool) (func(*initproc.Children), error) {
	if !on {
		return nil, nil
	}
	srv, err := newExecServer(execSocketFD)
	if err != nil {
		return nil, err
	}
	return srv.serve, nil
}

// joinThreadNamespaces moves every thread into the namespaces the
// calling thread entered alone.
func joinThreadNamespaces(namespaces []threadNS) error {
	for _, ns := range namespaces {
		own := "/proc/thread-self/ns/" + ns.name
		fd, err := unix.Open(own, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s: %w", own, err)
		}
		_, _, errno := syscall.AllThreadsSyscall(unix.SYS_SETNS, uintptr(fd), uintptr(ns.flag), 0)
		unix.Close(fd)
		if errno != 0 {
			return fmt.Errorf("moving every thread into the %s namespace: %w", ns.name, errno)
		}
	}
	return nil
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

// closeInherited closes the descriptors the setup child got through its
// execve but stdio and the channel: nothing of the host, such as a
// directory that could serve as a way out (CVE-2024-21626), stays with
// the init. They are the ones without close-on-exec, which Go sets on
// every descriptor it opens, its runtime's own included.
func closeInherited() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing descriptors: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 || fd == syncFD {
			continue
		}
		// An error means the descriptor was ReadDir's own, closed since.
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
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

// lookPath finds file the way a shell in directory dir would, with the
// container's PATH, after the switch into the container's root. A
// relative result is relative to dir.
func lookPath(dir, file string, env []string) (string, error) {
	check := func(p string) error {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		return executable(p)
	}
	if strings.Contains(file, "/") {
		if err := check(file); err != nil {
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
	for _, d := range strings.Split(path, ":") {
		if d == "" {
			d = "."
		}
		p := d + "/" + file
		if check(p) == nil {
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

// peerClosed reports whether the other end of the socket fd is closed.
func peerClosed(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
}
