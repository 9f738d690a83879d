package isolation

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"

	"golang.org/x/sys/unix"
)

// console relays between the caller's stdio and the pty master of a
// container started with Spec.Tty.
type console struct {
	master  *os.File
	outDone chan struct{}
	restore func() // puts the caller's terminal back, or nil
	stop    func() // stops following the window size, or nil
}

// handover is the socket pair a child sends its pty master back on: child
// goes to the child (as consoleFD), parent stays.
type handover struct{ parent, child *os.File }

func newHandover() (*handover, error) {
	parent, child, err := socketPair("nsnet-console", "console")
	if err != nil {
		return nil, err
	}
	return &handover{parent: parent, child: child}, nil
}

// Close closes both ends; the child's end is closed once the child has it.
func (h *handover) Close() {
	h.parent.Close()
	h.child.Close()
}

// attach receives the master and relays it to opts' stdio as p's console.
func (h *handover) attach(p *Process, opts Options) error {
	master, err := receiveConsole(h.parent)
	if err != nil {
		return err
	}
	if p.console, err = attachConsole(master, opts); err != nil {
		master.Close()
		return err
	}
	return nil
}

// errNoConsole: the child sent no pty master; it failed before, and says
// why on its channel.
var errNoConsole = errors.New("no console from the child")

// receiveConsole takes the pty master the child sent on sock.
func receiveConsole(sock *os.File) (*os.File, error) {
	_, fds, truncated, err := recvWithFDs(int(sock.Fd()), make([]byte, 1), 1)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoConsole, err)
	}
	if truncated || len(fds) != 1 {
		closeFDs(fds)
		return nil, fmt.Errorf("%w: %d descriptors", errNoConsole, len(fds))
	}
	return os.NewFile(uintptr(fds[0]), "console"), nil
}

// recvWithFDs reads one message into buf and the descriptors sent with it
// (close-on-exec). truncated says that the message or its descriptors did
// not fit, or that there were more than maxFDs of them.
func recvWithFDs(sock int, buf []byte, maxFDs int) (n int, fds []int, truncated bool, err error) {
	oob := make([]byte, unix.CmsgSpace(max(maxFDs, 1)*4))
	n, oobn, flags, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return 0, nil, false, err
	}
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return 0, nil, false, fmt.Errorf("parsing control messages: %w", err)
		}
		for i := range msgs {
			if rights, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				fds = append(fds, rights...)
			}
		}
	}
	return n, fds, flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || len(fds) > maxFDs, nil
}

// attachConsole starts relaying. A terminal on stdin goes into raw mode,
// so keys such as Ctrl-C reach the container's terminal as bytes and its
// line discipline signals the command, and its window size is copied to
// the pty now and on every SIGWINCH.
func attachConsole(master *os.File, opts Options) (*console, error) {
	c := &console{master: master, outDone: make(chan struct{})}
	if in, ok := opts.Stdin.(*os.File); ok && isTerminal(int(in.Fd())) {
		restore, err := makeRaw(int(in.Fd()))
		if err != nil {
			return nil, err
		}
		c.restore = restore
		c.stop = followWindowSize(in, master)
	}
	if opts.Stdin != nil {
		// Not waited for: a read from the caller's stdin cannot be
		// interrupted, and the copy ends at its next write once the
		// master is closed.
		go func() { _, _ = io.Copy(master, opts.Stdin) }()
	}
	out := opts.Stdout
	if out == nil {
		out = io.Discard
	}
	go func() {
		defer close(c.outDone)
		// Reading ends with EIO once no process holds the pty's slave.
		_, _ = io.Copy(out, master)
	}()
	return c, nil
}

// close waits until all output has been relayed, which happens once every
// process of the container has exited, and undoes attachConsole.
func (c *console) close() {
	<-c.outDone
	if c.stop != nil {
		c.stop()
	}
	if c.restore != nil {
		c.restore()
	}
	c.master.Close()
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// makeRaw switches a terminal to raw mode (as cfmakeraw does) and returns
// the function restoring it.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("reading terminal mode: %w", err)
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("setting raw mode: %w", err)
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// followWindowSize copies from's window size to the pty now and on every
// SIGWINCH until the returned function is called.
func followWindowSize(from, pty *os.File) func() {
	copySize := func() {
		if ws, err := unix.IoctlGetWinsize(int(from.Fd()), unix.TIOCGWINSZ); err == nil {
			_ = unix.IoctlSetWinsize(int(pty.Fd()), unix.TIOCSWINSZ, ws)
		}
	}
	copySize()
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				copySize()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// openPty opens a new pty of the devpts at /dev/pts (through /dev/ptmx) and
// returns its master and slave, both close-on-exec.
func openPty() (master, slave int, slavePath string, err error) {
	master, err = unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, "", fmt.Errorf("opening /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(master)
		return -1, -1, "", fmt.Errorf("unlocking the pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	if err != nil {
		unix.Close(master)
		return -1, -1, "", fmt.Errorf("reading the pty number: %w", err)
	}
	slavePath = "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	slave, err = unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(master)
		return -1, -1, "", fmt.Errorf("opening %s: %w", slavePath, err)
	}
	return master, slave, slavePath, nil
}

// sendConsole hands the pty master to the parent over sock.
func sendConsole(sock, master int) error {
	if err := unix.Sendmsg(sock, []byte{0}, unix.UnixRights(master), nil, 0); err != nil {
		return fmt.Errorf("sending the console: %w", err)
	}
	return nil
}

// takeTerminal makes the slave the calling process's stdio and controlling
// terminal, in a session of its own.
func takeTerminal(slave int) error {
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(slave, fd, 0); err != nil {
			return fmt.Errorf("attaching the console: %w", err)
		}
	}
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("starting a session: %w", err)
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("taking the terminal: %w", err)
	}
	return nil
}
