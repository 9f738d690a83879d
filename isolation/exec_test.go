package isolation

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

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
