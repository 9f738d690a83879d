package isolation

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// The parent (Start) and the setup child talk over a socketpair, fd 3 in
// the child, in JSON messages:
//
//	parent (Start)                                setup child (PID 1 of the new namespaces)
//	  | on a thread of its own (v1: entered into the
//	  |   cgroup's tasks files first, then ended):
//	  |   clone(CLONE_NEW*; v1: CLONE_NEWCGROUP,
//	  |   v2: CLONE_INTO_CGROUP) + execve(/proc/self/exe)
//	  |   (with a user namespace, Go's fork code writes uid_map and gid_map
//	  |    while the child waits on a pipe, before the execve: capabilities
//	  |    survive it only for a mapped root)
//	  | Place(pid), when the child is not born in its cgroup
//	  |---- config ----------------------------------->|
//	  | Prestart(pid), e.g. CNI ADD in                 | unshare cgroup ns (unless cloned);
//	  |   /proc/pid/ns/net, while the child works      | setns/hostname/lo up, rootfs.Setup
//	  |                                                | (pivot_root), console, sysctls,
//	  |                                                | rootfs.Harden; then without init: fds
//	  |                                                | CLOEXEC, no_new_privs, capabilities;
//	  |                                                | with init: every thread gets
//	  |                                                | no_new_privs, the namespaces and
//	  |                                                | capabilities
//	  |<== pty master (SCM_RIGHTS, fd 5; Spec.Tty) ====|
//	  |<------------------------------------- ready ---|
//	  | (waits for Prestart too, and for the forking   |
//	  |  thread's end)                                 |
//	  |---- start ------------------------------------>|
//	  |                                                | PR_SET_PDEATHSIG; without init:
//	  |                                                |   execve(command); with init: it
//	  |                                                |   becomes the init (cgo builds: execve
//	  |                                                |   nsnet-init) and forks+execs the command
//	  |<------------- EOF (execve closed fd 3)       --|  or EOF (init closed fd 3 after the fork)
//	  |<------------- error{"..."} (any step failed) --|  then exit 125 (setup) / 126, 127 (exec)
//
// The success of the last step is the socket closing: an execve that works
// closes the close-on-exec end; one that fails leaves it open to report.
type message struct {
	Type   string       `json:"type"`
	Config *childConfig `json:"config,omitempty"`
	Error  string       `json:"error,omitempty"`
}

const (
	msgConfig = "config"
	msgReady  = "ready"
	msgStart  = "start"
	msgError  = "error"
)

// channel reads and writes messages on one end of the socketpair.
type channel struct {
	enc *json.Encoder
	dec *json.Decoder
}

func newChannel(rw io.ReadWriter) *channel {
	return &channel{enc: json.NewEncoder(rw), dec: json.NewDecoder(rw)}
}

func (c *channel) send(m message) error {
	if err := c.enc.Encode(m); err != nil {
		return fmt.Errorf("sending %s: %w", m.Type, err)
	}
	return nil
}

// PrepareEncoding builds encoding/json's encoder for the messages Start
// sends, which otherwise takes the first Start about half a millisecond of
// reflection. Called on a goroutine of its own early on, it overlaps that
// with the caller's other work.
func PrepareEncoding() { _, _ = json.Marshal(message{Config: &childConfig{}}) }

// errChildClosed reports that the other side closed the channel.
var errChildClosed = errors.New("channel closed")

// expect reads the next message and checks its type; an error message from
// the child becomes an error carrying its text.
func (c *channel) expect(typ string) (message, error) {
	var m message
	if err := c.dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return m, errChildClosed
		}
		return m, fmt.Errorf("reading %s: %w", typ, err)
	}
	if m.Type == msgError {
		return m, errors.New(m.Error)
	}
	if m.Type != typ {
		return m, fmt.Errorf("got %q, want %q", m.Type, typ)
	}
	return m, nil
}

// closed waits for the other side to close the channel, which is how the
// child reports a successful execve; an error message is returned as such.
func (c *channel) closed() error {
	var m message
	err := c.dec.Decode(&m)
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("waiting for exec: %w", err)
	case m.Type == msgError:
		return errors.New(m.Error)
	}
	return fmt.Errorf("got %q while waiting for exec", m.Type)
}

// socketPair returns the two ends of a connected Unix socket pair named
// name, the parent's and the child's; what says what it is for in errors.
func socketPair(name, what string) (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: creating the %s socket: %w", ErrSetup, what, err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name+"-child"), nil
}
