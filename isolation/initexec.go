package isolation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/initproc"
)

// A container started with Spec.ExecSocket has its init start commands
// for Exec (ExecSpec.Socket). The socket is SOCK_SEQPACKET, so each JSON
// message arrives whole, with the descriptors sent along with it:
//
//	Exec                                        the container's init
//	  | connect; SO_PEERCRED must be the init's   |
//	  |   host PID                                | accept; checks SO_PEERCRED (execServer.admits)
//	  |---- request{args,env,cwd,tty} ----------->|
//	  |     + stdin, stdout, stderr (without tty) |
//	  |                                           | with tty: opens a pty of the container's devpts
//	  |<=== console + the pty master =============|
//	  |                                           | forks and executes the command from its main
//	  |                                           |   thread (initproc.Children)
//	  |<=== started + a pidfd of the command =====|
//	  | signals go through the pidfd              |
//	  |<--- exit{code} ---------------------------| once it has reaped the command
//	  |<--- error{error} -------------------------| instead, when a step failed
//	  | Exec's end closing before the exit makes  |
//	  |   the init kill the command               |
type execRequest struct {
	Args []string `json:"args"`
	Env  []string `json:"env"`
	Cwd  string   `json:"cwd"`
	Tty  bool     `json:"tty,omitempty"`
}

type execReply struct {
	Type  string `json:"type"`
	Code  int    `json:"code,omitempty"` // of exit
	Error string `json:"error,omitempty"`
}

const (
	replyConsole = "console"
	replyStarted = "started"
	replyExit    = "exit"
	replyError   = "error"
)

// Largest messages read: a request must fit in the sender's socket buffer
// anyway (net.core.wmem_default, about 208 KiB by default); replies are
// short.
const (
	maxExecRequest = 256 << 10
	maxExecReply   = 16 << 10
)

// bindExecSocket makes the exec socket at path, mode 0600, and returns it
// bound; the setup child listens on it. Start binds it rather than the
// setup child, which as root of a new user namespace may not create files
// in the caller's directories, and would leave the socket to a host uid of
// the container's.
func bindExecSocket(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: creating the exec socket: %w", ErrSetup, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: binding the exec socket %s: %w", ErrSetup, path, err)
	}
	// In time: nobody can connect before the setup child listens.
	if err := os.Chmod(path, 0o600); err != nil {
		unix.Close(fd)
		_ = os.Remove(path)
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return os.NewFile(uintptr(fd), "nsnet-exec-socket"), nil
}

// execServer is the init's end of the exec socket.
type execServer struct {
	ln int
	// owner and root are the uids the init sees for the owner of its user
	// namespace and for root of the namespace above.
	owner, root uint32
}

// newExecServer prepares the init to serve the listening socket ln. It
// reads the container's /proc, so it must run before the container's
// command, which could mount something else there.
func newExecServer(ln int) (*execServer, error) {
	ns, err := unix.Open("/proc/self/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the user namespace: %w", err)
	}
	owner, err := unix.IoctlGetUint32(ns, unix.NS_GET_OWNER_UID)
	unix.Close(ns)
	if err != nil {
		return nil, fmt.Errorf("reading the user namespace's owner: %w", err)
	}
	root, err := parentRootUID()
	if err != nil {
		return nil, err
	}
	return &execServer{ln: ln, owner: owner, root: root}, nil
}

// parentRootUID is the uid that root of the parent user namespace has in
// the init's: the one uid_map gives it or, unmapped, the overflow uid.
func parentRootUID() (uint32, error) {
	maps, err := readIDMap("/proc/self/uid_map")
	if err != nil {
		return 0, err
	}
	for _, m := range maps {
		if m.HostID <= 0 && 0 < m.HostID+m.Size {
			return uint32(m.ContainerID - m.HostID), nil
		}
	}
	data, err := os.ReadFile("/proc/sys/kernel/overflowuid")
	if err != nil {
		return 0, fmt.Errorf("reading the overflow uid: %w", err)
	}
	uid, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("reading the overflow uid: %w", err)
	}
	return uint32(uid), nil
}

// admits decides who the init starts commands for, from what the kernel
// tells of the peer (SO_PEERCRED), translated into the init's PID and user
// namespaces. The first barrier is the socket file: mode 0600, made by the
// user who started the container, so only that user and root of the host
// may connect, from where the path can be reached, which is not inside the
// container. In case it is reachable from elsewhere (the state directory
// bound into some container, say), the peer must also:
//   - not be a process of this container (PID 0: outside the container's
//     PID namespace): a command the init starts is the container's root
//     with the container's capabilities, which a process inside that gave
//     them up, or never had them, must not get back this way;
//   - be the user who started the container (the owner of its user
//     namespace) or root of the namespace above. Unmapped host uids all
//     look like the overflow uid from inside, so where the owner or root
//     is unmapped, the file's mode alone keeps other unmapped users out.
func (s *execServer) admits(c *unix.Ucred) bool {
	return c.Pid == 0 && (c.Uid == s.owner || c.Uid == s.root)
}

// serve accepts requests until the init exits.
func (s *execServer) serve(children *initproc.Children) {
	for {
		conn, _, err := unix.Accept4(s.ln, unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			go s.handle(conn, children)
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
		case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE), errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
			time.Sleep(100 * time.Millisecond)
		default:
			// Exec then gets ECONNREFUSED instead of waiting for a reply.
			unix.Close(s.ln)
			return
		}
	}
}

// handle serves one request: it starts the command and reports its exit.
func (s *execServer) handle(conn int, children *initproc.Children) {
	defer unix.Close(conn)
	fail := func(err error) {
		_ = sendMessage(conn, execReply{Type: replyError, Error: err.Error()})
	}
	cred, err := unix.GetsockoptUcred(conn, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || !s.admits(cred) {
		// The request is read (a byte of it, the rest dropped) all the
		// same: closing a socket with a message unread would reset the
		// connection before the refusal is read.
		_, _ = recvMessage(conn, &execRequest{}, 1, 3)
		fail(errors.New("the container's init starts commands only for the user who started the container"))
		return
	}
	var req execRequest
	files, err := recvMessage(conn, &req, maxExecRequest, 3)
	if err != nil {
		fail(fmt.Errorf("reading the exec request: %w", err))
		return
	}
	pidfd, exited, err := startExec(conn, req, files, children)
	// The command has them now; closing ours lets its output end with it.
	closeFDs(files)
	if err != nil {
		fail(err)
		return
	}
	defer unix.Close(pidfd)
	hangup := make(chan struct{})
	go func() {
		defer close(hangup)
		buf := make([]byte, 1)
		for {
			if n, err := unix.Read(conn, buf); n == 0 || err != nil {
				return
			}
		}
	}()
	// A failed send means Exec is gone: hangup follows.
	_ = sendMessage(conn, execReply{Type: replyStarted}, pidfd)
	var ws syscall.WaitStatus
	select {
	case ws = <-exited:
	case <-hangup:
		_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		ws = <-exited
	}
	_ = sendMessage(conn, execReply{Type: replyExit, Code: initproc.ExitCode(ws)})
	// Ends the reader, which must be done with conn before it is closed.
	_ = unix.Shutdown(conn, unix.SHUT_RDWR)
	<-hangup
}

// startExec starts the command req asks for, with files as its stdio (none
// with a tty).
func startExec(conn int, req execRequest, files []int, children *initproc.Children) (pidfd int, exited <-chan syscall.WaitStatus, err error) {
	if len(req.Args) == 0 || req.Args[0] == "" || !filepath.IsAbs(req.Cwd) || req.Tty != (len(files) == 0) || !req.Tty && len(files) != 3 {
		return -1, nil, errors.New("malformed exec request")
	}
	var st unix.Stat_t
	if err := unix.Stat(req.Cwd, &st); err != nil {
		return -1, nil, fmt.Errorf("working directory %s: %w", req.Cwd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return -1, nil, fmt.Errorf("working directory %s: %w", req.Cwd, unix.ENOTDIR)
	}
	path, err := lookPath(req.Cwd, req.Args[0], req.Env)
	if err != nil {
		return -1, nil, err
	}
	cmd := initproc.Command{Path: path, Args: req.Args, Env: req.Env, Dir: req.Cwd, Files: files}
	if req.Tty {
		master, slave, _, err := openPty()
		if err != nil {
			return -1, nil, err
		}
		defer unix.Close(slave)
		err = sendMessage(conn, execReply{Type: replyConsole}, master)
		unix.Close(master)
		if err != nil {
			return -1, nil, fmt.Errorf("sending the console: %w", err)
		}
		cmd.Files, cmd.Terminal = []int{slave, slave, slave}, true
	}
	return children.Start(cmd)
}

// initExec is Exec's end of a command the container's init started.
type initExec struct {
	conn int
	// mu keeps signal from using pidfd while wait closes it.
	mu    sync.Mutex
	pidfd int
	// copies are the goroutines copying the command's output, done when
	// it and whatever inherited its output have closed it.
	copies sync.WaitGroup
}

// execByInit has the init of the container with PID 1 pid, listening on
// socket, start the command.
func execByInit(pid int, socket string, req execRequest, opts Options) (*Process, error) {
	conn, err := dialExec(socket, pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	s := &initExec{conn: conn, pidfd: -1}
	p := &Process{Pid: -1, byInit: s, done: make(chan struct{})}
	if err := s.start(p, req, opts); err != nil {
		s.close()
		if p.console != nil {
			p.console.close()
		}
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	return p, nil
}

// dialExec connects to the exec socket, which must be served by the
// process with host PID pid: not by whatever else could be at the path.
func dialExec(path string, pid int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("creating a socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connecting to the container's init at %s: %w", path, err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err == nil && int(cred.Pid) != pid {
		err = fmt.Errorf("served by PID %d, not by the container's init (PID %d)", cred.Pid, pid)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("exec socket %s: %w", path, err)
	}
	return fd, nil
}

// start sends the request and waits for the command to run.
func (s *initExec) start(p *Process, req execRequest, opts Options) error {
	var files []int
	var given []*os.File
	if !req.Tty {
		stdio, g, err := s.stdio(opts)
		if err != nil {
			return err
		}
		for _, f := range stdio {
			files = append(files, int(f.Fd()))
		}
		given = g
	}
	err := sendMessage(s.conn, req, files...)
	for _, f := range given {
		f.Close()
	}
	if errors.Is(err, unix.EMSGSIZE) {
		return errors.New("the command and its environment are too large to send to the container's init")
	}
	if err != nil {
		return fmt.Errorf("sending the exec request: %w", err)
	}
	if req.Tty {
		fds, err := s.expect(replyConsole, 1)
		if err != nil {
			return err
		}
		master := os.NewFile(uintptr(fds[0]), "console")
		if p.console, err = attachConsole(master, opts); err != nil {
			master.Close()
			return err
		}
	}
	fds, err := s.expect(replyStarted, 1)
	if err != nil {
		return err
	}
	s.pidfd = fds[0]
	p.Pid = pidOf(s.pidfd)
	return nil
}

// stdio returns the descriptors for opts' streams: an *os.File as it is,
// /dev/null for nil, and for anything else a pipe, copied by a goroutine.
// given are the ones this process made for the command, to close once
// they are sent.
func (s *initExec) stdio(opts Options) (stdio [3]*os.File, given []*os.File, err error) {
	defer func() {
		if err != nil {
			for _, f := range given {
				f.Close()
			}
		}
	}()
	var devNull *os.File
	null := func() (*os.File, error) {
		if devNull == nil {
			f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			if err != nil {
				return nil, err
			}
			devNull = f
			given = append(given, f)
		}
		return devNull, nil
	}
	switch in := opts.Stdin.(type) {
	case nil:
		stdio[0], err = null()
	case *os.File:
		stdio[0] = in
	default:
		r, w, perr := os.Pipe()
		if perr != nil {
			return stdio, given, perr
		}
		given = append(given, r)
		// Not waited for, as with the console.
		go func() {
			_, _ = io.Copy(w, in)
			w.Close()
		}()
		stdio[0] = r
	}
	if err != nil {
		return stdio, given, err
	}
	for i, out := range []io.Writer{opts.Stdout, opts.Stderr} {
		switch o := out.(type) {
		case nil:
			stdio[i+1], err = null()
		case *os.File:
			stdio[i+1] = o
		default:
			if i == 1 && sameWriter(opts.Stdout, opts.Stderr) {
				// One pipe, so a writer that is not safe for
				// concurrent use gets one copy at a time.
				stdio[2] = stdio[1]
				continue
			}
			r, w, perr := os.Pipe()
			if perr != nil {
				return stdio, given, perr
			}
			given = append(given, w)
			s.copies.Add(1)
			go func() {
				defer s.copies.Done()
				_, _ = io.Copy(o, r)
				r.Close()
			}()
			stdio[i+1] = w
		}
		if err != nil {
			return stdio, given, err
		}
	}
	return stdio, given, nil
}

// sameWriter reports whether a and b are the same writer; values of types
// that cannot be compared are not.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// expect reads the next reply, which must be of type typ with n
// descriptors.
func (s *initExec) expect(typ string, n int) ([]int, error) {
	var r execReply
	fds, err := recvMessage(s.conn, &r, maxExecReply, n)
	switch {
	case errors.Is(err, io.EOF):
		return nil, errors.New("the container's init closed the exec socket")
	case err != nil:
		return nil, fmt.Errorf("reading the container's init's reply: %w", err)
	case r.Type == replyError:
		err = errors.New(r.Error)
	case r.Type != typ || len(fds) != n:
		err = fmt.Errorf("the container's init replied %q with %d descriptors, want %q with %d", r.Type, len(fds), typ, n)
	}
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	return fds, nil
}

// pidOf reads the host PID of the process a pidfd refers to: -1 when the
// process is gone already.
func pidOf(pidfd int) int {
	data, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return pid
			}
		}
	}
	return -1
}

// wait returns the command's exit code once the init has reaped it, and
// once its output is copied.
func (s *initExec) wait() (int, error) {
	var r execReply
	_, err := recvMessage(s.conn, &r, maxExecReply, 0)
	code := r.Code
	switch {
	case errors.Is(err, io.EOF):
		// The init exited, and the kernel killed everything else in the
		// container with it.
		code, err = 128+int(unix.SIGKILL), nil
	case err != nil:
		code, err = -1, fmt.Errorf("waiting for the exec'd command: %w", err)
	case r.Type != replyExit:
		code, err = -1, fmt.Errorf("the container's init replied %q, want %q", r.Type, replyExit)
	}
	s.copies.Wait()
	s.close()
	return code, err
}

func (s *initExec) signal(sig os.Signal) error {
	n, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("unsupported signal %v", sig)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pidfd < 0 {
		return os.ErrProcessDone
	}
	err := unix.PidfdSendSignal(s.pidfd, n, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return os.ErrProcessDone
	}
	if err != nil {
		return fmt.Errorf("signalling the exec'd command: %w", err)
	}
	return nil
}

func (s *initExec) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	unix.Close(s.conn)
}

// sendMessage sends v as one JSON message, with the descriptors fds.
func sendMessage(conn int, v any, fds ...int) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(conn, data, oob, nil, 0)
}

// recvMessage reads one message of at most size bytes into v and returns
// the descriptors that came with it (close-on-exec), which may be at most
// maxFDs. The peer having closed its end is io.EOF.
func recvMessage(conn int, v any, size, maxFDs int) ([]int, error) {
	buf := make([]byte, size)
	n, fds, truncated, err := recvWithFDs(conn, buf, maxFDs)
	if err != nil {
		return nil, err
	}
	switch {
	case n == 0 && len(fds) == 0:
		return nil, io.EOF
	case truncated:
		err = errors.New("message too large")
	default:
		err = json.Unmarshal(buf[:n], v)
	}
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
