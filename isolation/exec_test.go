package isolation

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/caps"
)

func TestExecJoinsContainer(t *testing.T) {
	root := needRoot(t)
	spec := sh(root, "sleep 30")
	spec.Hostname = "nsnet-exec-test"
	c := startContainer(t, spec, Options{})
	pidns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	p, err := Exec(c.Pid, ExecSpec{
		Args: []string{"sh", "-c", "hostname; readlink /proc/self/ns/pid; grep CapEff /proc/self/status; exit 5"},
	}, Options{Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("nsnet-exec-test\n%s\nCapEff:\t%s\n", pidns, caps.Default)
	if code != 5 || out.String() != want {
		t.Fatalf("exit code %d, output %q (stderr %q); want 5, %q", code, out.String(), errOut.String(), want)
	}

	if _, err := Exec(c.Pid, ExecSpec{Args: []string{"nsnet-no-such-command"}}, Options{}); err == nil ||
		!strings.Contains(err.Error(), "not found") {
		t.Fatalf("Exec of a missing command: %v", err)
	}
}

// TestExecTty: an exec'd command with Tty gets a pty of the container's
// devpts as its controlling terminal, and the caller's input reaches it.
func TestExecTty(t *testing.T) {
	root := needRoot(t)
	c := startContainer(t, sh(root, "sleep 30"), Options{})
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	defer inW.Close()
	var out bytes.Buffer
	p, err := Exec(c.Pid, ExecSpec{
		Args: []string{"sh", "-c", `tty; test -t 0 && test -t 1 && echo terminal; read line; echo "got $line"; exit 3`},
		Tty:  true,
	}, Options{Stdin: inR, Stdout: &out})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if _, err := inW.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	// The pty echoes the input line and turns "\n" into "\r\n".
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if code != 3 || !strings.Contains(got, "/dev/pts/") || !strings.Contains(got, "terminal\n") || !strings.Contains(got, "got hello\n") {
		t.Fatalf("exit code %d, output %q; want 3, a /dev/pts terminal and the input line", code, got)
	}
}

// TestExecUserNamespace: a command exec'd into a user-namespaced container
// through its init has what the container's command has: root in the
// container's user namespace, its id map and capabilities.
func TestExecUserNamespace(t *testing.T) {
	root := needRoot(t)
	const hostID = 231072
	sock := filepath.Join(t.TempDir(), "exec.sock")
	spec := sh(root, `grep CapEff /proc/self/status; read line; exit 5`)
	spec.UserNS = true
	spec.UIDMap = []IDMap{{ContainerID: 0, HostID: hostID, Size: 65536}}
	spec.GIDMap = spec.UIDMap
	spec.ExecSocket = sock
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	c := startContainer(t, spec, Options{Stdin: inR, Stdout: outW})
	inR.Close()
	outW.Close()
	capLine, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	userns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", c.Pid))
	if err != nil {
		t.Fatal(err)
	}
	ownNS, _ := os.Readlink("/proc/self/ns/user")
	if userns == ownNS {
		t.Fatal("the container has no user namespace of its own")
	}

	t.Run("joins the user namespace", func(t *testing.T) {
		var out, errOut bytes.Buffer
		p, err := Exec(c.Pid, ExecSpec{
			Args:   []string{"sh", "-c", "id -u; cat /proc/self/uid_map; grep CapEff /proc/self/status; readlink /proc/self/ns/user; ls /proc/self/fd; exit 7"},
			Socket: sock,
		}, Options{Stdout: &out, Stderr: &errOut})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		if p.Pid <= 0 {
			t.Errorf("Process.Pid %d, want the command's host PID", p.Pid)
		}
		code, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		got := regexp.MustCompile(`[ \t]+`).ReplaceAllString(out.String(), " ")
		want := fmt.Sprintf("0\n 0 %d 65536\n%s%s\n0\n1\n2\n3\n", hostID, strings.ReplaceAll(capLine, "\t", " "), userns)
		if code != 7 || got != want {
			t.Fatalf("exit code %d, output %q (stderr %q); want 7, %q", code, got, errOut.String(), want)
		}
	})

	t.Run("command not found", func(t *testing.T) {
		if _, err := Exec(c.Pid, ExecSpec{Args: []string{"nsnet-no-such-command"}, Socket: sock}, Options{}); err == nil ||
			!strings.Contains(err.Error(), "not found") {
			t.Fatalf("Exec of a missing command: %v", err)
		}
	})

	t.Run("signal", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		p, err := Exec(c.Pid, ExecSpec{Args: []string{"sh", "-c", "echo ready; exec sleep 30"}, Socket: sock}, Options{Stdout: w})
		w.Close()
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		if line, err := bufio.NewReader(r).ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code, err := p.Wait(); code != 128+int(syscall.SIGTERM) || err != nil {
			t.Fatalf("exit code %d, %v; want 143", code, err)
		}
		if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
			t.Fatalf("Signal after Wait: %v", err)
		}
	})

	t.Run("tty", func(t *testing.T) {
		ttyR, ttyW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer ttyR.Close()
		defer ttyW.Close()
		var out bytes.Buffer
		p, err := Exec(c.Pid, ExecSpec{
			Args:   []string{"sh", "-c", `tty; test -t 0 && test -t 1 && echo terminal; id -u; read line; echo "got $line"; exit 3`},
			Tty:    true,
			Socket: sock,
		}, Options{Stdin: ttyR, Stdout: &out})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		if _, err := ttyW.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		code, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		got := strings.ReplaceAll(out.String(), "\r\n", "\n")
		// The terminal echoes the input line whenever it arrives, so
		// the lines are checked, not their order.
		lines := strings.Split(got, "\n")
		if code != 3 || !strings.Contains(got, "/dev/pts/") || !slices.Contains(lines, "terminal") || !slices.Contains(lines, "0") || !slices.Contains(lines, "got hello") {
			t.Fatalf("exit code %d, output %q; want 3, a /dev/pts terminal, uid 0 and the input line", code, got)
		}
	})

	// Last: the container's command exiting ends the container, and the
	// kernel kills the exec'd command with it.
	t.Run("container exit", func(t *testing.T) {
		p, err := Exec(c.Pid, ExecSpec{Args: []string{"sleep", "30"}, Socket: sock}, Options{})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		if _, err := inW.Write([]byte("done\n")); err != nil {
			t.Fatal(err)
		}
		if code := waitContainer(t, c); code != 5 {
			t.Fatalf("container exit code %d, want its command's 5", code)
		}
		if code, err := p.Wait(); code != 128+int(syscall.SIGKILL) || err != nil {
			t.Fatalf("exec'd command: exit code %d, %v; want 137", code, err)
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("exec socket after the container exited: %v", err)
		}
	})
}

// A process of the container itself may not have the init start a
// command: it would get the container's capabilities back.
func TestExecSocketRefusesContainerProcesses(t *testing.T) {
	root := needRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := runContainer(t, Spec{
		Rootfs:     root,
		Args:       []string{"/exec-client", "/sock/exec.sock"},
		Env:        []string{helperEnv + "=exec-client"},
		Volumes:    []Volume{{Source: exe, Target: "/exec-client", ReadOnly: true}, {Source: dir, Target: "/sock"}},
		Init:       true,
		ExecSocket: filepath.Join(dir, "exec.sock"),
	})
	mustSucceed(t, r)
	if !strings.Contains(r.stdout, "only for the user who started the container") {
		t.Fatalf("exec from inside the container: %q (stderr %q); want it refused", r.stdout, r.stderr)
	}
}

func TestExecServerAdmits(t *testing.T) {
	s := &execServer{owner: 0, root: 0}
	rootless := &execServer{owner: 0, root: 65534}
	tests := []struct {
		name string
		srv  *execServer
		peer unix.Ucred
		want bool
	}{
		{"owner outside", s, unix.Ucred{Pid: 0, Uid: 0}, true},
		{"owner's uid inside the container", s, unix.Ucred{Pid: 12, Uid: 0}, false},
		{"other user outside", s, unix.Ucred{Pid: 0, Uid: 1000}, false},
		{"rootless owner", rootless, unix.Ucred{Pid: 0, Uid: 0}, true},
		{"host root, unmapped", rootless, unix.Ucred{Pid: 0, Uid: 65534}, true},
		{"container's nobody", rootless, unix.Ucred{Pid: 7, Uid: 65534}, false},
	}
	for _, tt := range tests {
		if got := tt.srv.admits(&tt.peer); got != tt.want {
			t.Errorf("%s: admits %+v = %v, want %v", tt.name, tt.peer, got, tt.want)
		}
	}
}
