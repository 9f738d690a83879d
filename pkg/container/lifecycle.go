package container

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation"
	"github.com/nsnet/nsnet/isolation/cgroups"
	"github.com/nsnet/nsnet/pkg/cninet"
)

// logFile holds the output of a detached container.
const logFile = "log"

// execSocketFile, in the state directory of a container with a user
// namespace and the init, is the socket its init starts exec'd commands
// on: only a child of the init can have the container's user namespace.
const execSocketFile = "exec.sock"

// execSocket is the exec socket of a container configured as cfg in dir,
// or "" when it has none (and exec joins its namespaces from outside).
func execSocket(dir string, cfg Config) string {
	if !cfg.UserNS || !cfg.Init {
		return ""
	}
	return filepath.Join(dir, execSocketFile)
}

// Stdio is where a container's standard streams go.
type Stdio struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Prepare validates a new container and records it as created, with its
// /etc files written; the caller then starts it with Start. id and name
// default to a random id.
func (s Store) Prepare(id, name string, cfg Config) (*State, error) {
	if id == "" {
		var err error
		if id, err = NewID(); err != nil {
			return nil, err
		}
	}
	if err := CheckID(id); err != nil {
		return nil, err
	}
	if name == "" {
		name = id
	}
	if err := CheckName(name); err != nil {
		return nil, err
	}
	_, cni, err := netNS(cfg.Net)
	if err != nil {
		return nil, err
	}
	if !cni && (len(cfg.Publish) > 0 || len(cfg.IPs) > 0 || cfg.MAC != "") {
		return nil, fmt.Errorf("publishing ports, --ip and --mac need --net NETWORK, not --net %s", cfg.Net)
	}
	if len(cfg.Args) == 0 || cfg.Args[0] == "" {
		return nil, errors.New("no command given")
	}
	if cfg.Rootfs != "" {
		abs, err := filepath.Abs(cfg.Rootfs)
		if err != nil {
			return nil, fmt.Errorf("rootfs %s: %w", cfg.Rootfs, err)
		}
		cfg.Rootfs = abs
	}
	if cfg.Hostname == "" {
		cfg.Hostname = id[:min(12, len(id))]
	}
	cg, cgm, err := cgroupPlan(id, cfg)
	if err != nil {
		return nil, err
	}
	st := &State{ID: id, Name: name, Status: Created, Created: time.Now().UTC(), Config: cfg, Cgroup: cg, cgm: cgm}
	if err := st.setMonitor(os.Getpid()); err != nil {
		return nil, err
	}
	if err := s.create(st); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *State) setMonitor(pid int) error {
	start, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("reading start time of process %d: %w", pid, err)
	}
	st.Monitor, st.MonitorStart = pid, start
	return nil
}

// Start starts a prepared container and records it as running, with the
// calling process as its monitor: the one that must Wait and Finish. A
// container on a CNI network is attached to it before its command starts.
// relay, when not nil, catches signals before the container's process
// exists. On failure the container's state is removed.
func (s Store) Start(st *State, stdio Stdio, relay *SignalRelay) (*isolation.Process, error) {
	p, err := s.start(st, stdio, relay)
	if err != nil {
		s.remove(st.ID, st.Name)
		return nil, err
	}
	return p, nil
}

func (s Store) start(st *State, stdio Stdio, relay *SignalRelay) (*isolation.Process, error) {
	spec, err := st.Config.spec(etcFiles(st.Dir))
	if err != nil {
		return nil, err
	}
	spec.ExecSocket = execSocket(st.Dir, st.Config)
	if st.Monitor != os.Getpid() {
		if err := st.setMonitor(os.Getpid()); err != nil {
			return nil, err
		}
	}
	opts := isolation.Options{Stdin: stdio.Stdin, Stdout: stdio.Stdout, Stderr: stdio.Stderr}
	if _, cni, _ := netNS(st.Config.Net); cni {
		// Loading the network (files, and the host's routes for the
		// built-in one) overlaps the cgroup's creation and the clone.
		type loaded struct {
			n   *cninet.Network
			err error
		}
		nc := make(chan loaded, 1)
		go cninet.PrepareEncoding()
		go func() {
			n, err := st.Config.loadNetwork()
			nc <- loaded{n, err}
		}()
		opts.Prestart = func(pid int) error {
			l := <-nc
			if l.err != nil {
				return l.err
			}
			return s.attachNetwork(st, l.n, pid)
		}
	}
	// The /etc files (in the state directory) and the cgroup do not
	// depend on each other: they are made side by side.
	etc := make(chan error, 1)
	go func() {
		_, err := writeEtcFiles(st.Dir, st.Config)
		etc <- err
	}()
	cg, err := s.createCgroup(st)
	if err = errors.Join(err, <-etc); err != nil {
		return nil, errors.Join(err, s.destroyCgroup(st))
	}
	// After the creation: a hierarchy it skipped is not mounted.
	spec.Cgroupfs = st.Cgroup.cgroupfs()
	if stdio.Stderr != nil {
		for _, w := range st.Warnings {
			fmt.Fprintf(stdio.Stderr, "nsnet: warning: %s\n", w)
		}
	}
	if cg != nil {
		opts.Place = cg.Apply
		if e, ok := cg.(cgroups.Entrant); ok {
			entry := e.Entry()
			opts.Place, opts.CgroupDir, opts.CgroupTasks = nil, entry.Dir, entry.Tasks
		}
	}
	relay.Ready()
	p, err := isolation.Start(spec, opts)
	if err != nil {
		// The attachment exists when the start failed after Prestart.
		return nil, errors.Join(err, s.detachNetwork(st), s.destroyCgroup(st))
	}
	st.Pid = p.Pid
	st.PidStart, err = startTime(p.Pid)
	st.Status = Running
	if err == nil {
		err = s.save(st)
	}
	if err != nil {
		_ = p.Signal(unix.SIGKILL)
		_, _ = p.Wait()
		return nil, errors.Join(fmt.Errorf("recording container %s: %w", st.ID, err), s.detachNetwork(st), s.destroyCgroup(st))
	}
	return p, nil
}

// etcFiles names the files writeEtcFiles wrote into dir.
func etcFiles(dir string) map[string]string {
	out := map[string]string{}
	for _, name := range []string{"hostname", "hosts", "resolv.conf"} {
		out["/etc/"+name] = filepath.Join(dir, name)
	}
	return out
}

// Finish detaches the container from its CNI network and records that it
// exited with code, or removes it when it was run with AutoRemove. When
// the DEL fails the attachment stays recorded, for rm to retry.
func (s Store) Finish(st *State, code int) error {
	st.noteOOM()
	// Both wait on the kernel (RCU grace periods); they touch different
	// fields of st.
	cgDone := make(chan error, 1)
	go func() { cgDone <- s.destroyCgroup(st) }()
	nerr := s.detachNetwork(st)
	nerr = errors.Join(nerr, <-cgDone)
	if st.Config.AutoRemove && nerr == nil {
		return s.remove(st.ID, st.Name)
	}
	now := time.Now().UTC()
	st.Status, st.ExitCode, st.Finished = Stopped, &code, &now
	return errors.Join(nerr, s.save(st))
}

// Run runs a container in the foreground: it returns the command's exit
// code once it exits. SIGINT, SIGTERM and SIGHUP are forwarded to it.
func (s Store) Run(st *State, stdio Stdio) (int, error) {
	relay := NewSignalRelay()
	defer relay.Stop()
	p, err := s.Start(st, stdio, relay)
	if err != nil {
		return 0, err
	}
	relay.Forward(p)
	code, werr := p.Wait()
	if err := s.Finish(st, code); err != nil {
		return code, err
	}
	return code, werr
}

// StartDetached starts a prepared container under a monitor: a copy of
// the calling binary run with monitorArgs (which must end up in Monitor),
// in a session of its own so it outlives the caller. It returns once the
// container runs, or with the error that kept it from starting.
func (s Store) StartDetached(st *State, monitorArgs []string) error {
	r, w, err := os.Pipe()
	if err != nil {
		s.remove(st.ID, st.Name)
		return fmt.Errorf("creating the monitor's pipe: %w", err)
	}
	defer r.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		s.remove(st.ID, st.Name)
		return err
	}
	defer devnull.Close()
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        monitorArgs,
		Stdin:       devnull,
		Stdout:      devnull,
		Stderr:      devnull,
		ExtraFiles:  []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		s.remove(st.ID, st.Name)
		return fmt.Errorf("starting the monitor: %w", err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "ok" {
		// The monitor stays; it is not this process's child to wait for
		// once this process exits.
		return cmd.Process.Release()
	}
	// The monitor removed the state before reporting; wait so nothing of
	// it is left when this returns.
	_ = cmd.Wait()
	if line == "" {
		s.remove(st.ID, st.Name)
		return errors.New("the monitor exited without starting the container")
	}
	return errors.New(line)
}

// Monitor is the detached container's monitor: it starts the prepared
// container id with its output appended to the log in its state
// directory, reports "ok" or the error on ready, and waits for it to
// record its exit code. It returns the code to exit with.
func (s Store) Monitor(id string, ready io.WriteCloser) int {
	report := func(msg string) {
		fmt.Fprintln(ready, strings.ReplaceAll(msg, "\n", " "))
		ready.Close()
	}
	st, err := s.read(id)
	if err != nil {
		report(err.Error())
		return isolation.ExitSetupFailed
	}
	log, err := os.OpenFile(filepath.Join(st.Dir, logFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		s.remove(id, st.Name)
		report(fmt.Sprintf("opening the log: %v", err))
		return isolation.ExitSetupFailed
	}
	defer log.Close()
	relay := NewSignalRelay()
	defer relay.Stop()
	p, err := s.Start(st, Stdio{Stdout: log, Stderr: log}, relay)
	if err != nil {
		report(err.Error())
		return isolation.ExitSetupFailed
	}
	relay.Forward(p)
	report("ok")
	code, _ := p.Wait()
	if err := s.Finish(st, code); err != nil {
		fmt.Fprintln(log, "nsnet monitor:", err)
		return 1
	}
	return 0
}

// Exec runs args in the running container ref with its environment,
// working directory (unless cwd is set) and capabilities; tty gives it a
// terminal. In a container with a user namespace and the init, the init
// starts it, so it is in that user namespace too; without the init it
// joins every other namespace and runs as the host uid the container's
// root maps to, with no capabilities (see isolation.Exec).
func (s Store) Exec(ref string, args, env []string, cwd string, tty bool, stdio Stdio) (*isolation.Process, error) {
	st, err := s.Load(ref)
	if err != nil {
		return nil, err
	}
	if !st.Running() {
		return nil, fmt.Errorf("container %s is not running", st.ID)
	}
	c := st.Config
	if cwd == "" {
		cwd = c.Cwd
	}
	spec := isolation.ExecSpec{
		Args:       args,
		Env:        append(append([]string{}, c.Env...), env...),
		Cwd:        cwd,
		Hostname:   c.Hostname,
		Privileged: c.Privileged,
		CapAdd:     c.CapAdd,
		CapDrop:    c.CapDrop,
		Tty:        tty,
		Socket:     execSocket(st.Dir, c),
	}
	opts := isolation.Options{Stdin: stdio.Stdin, Stdout: stdio.Stdout, Stderr: stdio.Stderr}
	if st.Cgroup != nil && spec.Socket == "" {
		m, err := st.cgroupManager()
		if err != nil {
			return nil, err
		}
		opts.Place = m.Apply
	}
	return isolation.Exec(st.Pid, spec, opts)
}

// Kill sends sig to the PID 1 of the running container ref; with nsnet's
// init the command gets it.
func (s Store) Kill(ref string, sig unix.Signal) error {
	st, err := s.Load(ref)
	if err != nil {
		return err
	}
	if !st.Running() {
		return fmt.Errorf("container %s is not running", st.ID)
	}
	return signalProcess(st.Pid, st.PidStart, sig)
}

// signalProcess signals pid only if it is still the process that started
// at start: through a pidfd, so the check and the signal concern the same
// process even if the PID is reused in between.
func signalProcess(pid int, start uint64, sig unix.Signal) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("opening process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !alive(pid, start) {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling process %d: %w", pid, err)
	}
	return nil
}

// Remove deletes container ref. A running one is refused unless force,
// which kills it first and waits for its monitor to record the exit. A
// CNI attachment still recorded (its nsnet was killed) is deleted first;
// when that fails the container stays, for rm to retry.
func (s Store) Remove(ref string, force bool) error {
	st, err := s.Load(ref)
	if err != nil {
		return err
	}
	if st.Running() {
		if !force {
			return fmt.Errorf("container %s is running: kill it first or use rm -f", st.ID)
		}
		if st.Paused {
			// A frozen task cannot act on SIGKILL under cgroup v1.
			if m, err := st.cgroupManager(); err == nil {
				_ = m.Thaw()
			}
		}
		if err := signalProcess(st.Pid, st.PidStart, unix.SIGKILL); err != nil {
			return err
		}
		if !waitGone(st.Pid, st.PidStart, 10*time.Second) {
			return fmt.Errorf("container %s did not exit after SIGKILL", st.ID)
		}
	}
	// The monitor writes the exit code into the directory; let it finish
	// (or, stuck while creating the container, stop it) before removing.
	if st.Monitor != os.Getpid() && st.monitorAlive() && !waitGone(st.Monitor, st.MonitorStart, 5*time.Second) {
		if !force {
			return fmt.Errorf("container %s is being created or stopped by process %d: retry or use rm -f", st.ID, st.Monitor)
		}
		if err := signalProcess(st.Monitor, st.MonitorStart, unix.SIGKILL); err != nil {
			return err
		}
		waitGone(st.Monitor, st.MonitorStart, 5*time.Second)
	}
	// The monitor may have detached the network, or removed the container,
	// meanwhile.
	st, err = s.read(st.ID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.detachNetwork(st); err != nil {
		return err
	}
	if err := s.destroyCgroup(st); err != nil {
		return errors.Join(err, s.save(st))
	}
	return s.remove(st.ID, st.Name)
}

// waitGone polls until the process is gone or timeout passes.
func waitGone(pid int, start uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid, start) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// SignalRelay forwards SIGINT, SIGTERM and SIGHUP to a container or an
// exec'd command. It catches them before the process starts, so one that
// arrives during setup is delivered rather than killing nsnet and leaving
// the container without the process that waits for it.
type SignalRelay struct {
	ch       chan os.Signal
	catching chan struct{}
	done     chan struct{}
}

// NewSignalRelay starts catching the signals. Subscribing takes a round
// trip per signal with os/signal's thread, most of a millisecond: it runs
// in the background, and Start waits for it only before the container's
// process is created.
func NewSignalRelay() *SignalRelay {
	r := &SignalRelay{ch: make(chan os.Signal, 8), catching: make(chan struct{}), done: make(chan struct{})}
	go func() {
		signal.Notify(r.ch, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
		close(r.catching)
	}()
	return r
}

// Ready returns once the signals are caught; a nil relay catches none.
func (r *SignalRelay) Ready() {
	if r != nil {
		<-r.catching
	}
}

// Forward sends the signals caught so far, and later ones, to p until Stop.
func (r *SignalRelay) Forward(p *isolation.Process) {
	go func() {
		<-r.catching
		for {
			select {
			case sig := <-r.ch:
				_ = p.Signal(sig)
			case <-r.done:
				return
			}
		}
	}()
}

// Stop ends the forwarding at once and restores the signals' default
// handling in the background: os/signal waits for its signal loop to be
// idle, most of a millisecond that a caller about to exit has no use for.
func (r *SignalRelay) Stop() {
	close(r.done)
	go func() {
		<-r.catching
		signal.Stop(r.ch)
	}()
}
