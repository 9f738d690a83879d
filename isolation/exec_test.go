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
