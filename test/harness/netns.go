// Package harness provides the fixtures and drivers for nsnet's black-box tests of CNI plugins:
// throw-away network namespaces (a sandbox "host", its uplink, containers), plugin binaries
// built once per test binary, runners that invoke plugins exactly like a container runtime
// (raw exec and libcni), connectivity probes, and checks that nothing was left behind.
//
// Every kernel change the harness or a plugin makes happens inside namespaces the harness
// created; the root network namespace is never touched.
package harness

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// NamePrefix starts the name of every netns the harness creates, so that leftovers are easy to
// spot (`ip netns list | grep nsnt`) and never collide with anything else on the machine.
const NamePrefix = "nsnt"

// netnsRunDir is where iproute2 keeps named namespaces; `ip netns exec` only finds them there.
const netnsRunDir = "/run/netns"

// NetNS is a named, persistent network namespace (as made by `ip netns add`) with an open
// handle, so Go code can enter it and commands can run in it through `ip netns exec`.
type NetNS struct {
	name   string
	handle ns.NetNS
}

// RequireRoot skips the test when it cannot create namespaces.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, links and netfilter rules inside them")
	}
}

// NewNetNS creates a netns named NamePrefix+<random id>[-label] that is deleted when the test
// ends, whatever its outcome.
func NewNetNS(t testing.TB, label string) *NetNS {
	t.Helper()
	RequireRoot(t)
	n, err := CreateNetNS(label)
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("removing netns %s: %v", n.Name(), err)
		}
	})
	return n
}

// CreateNetNS is NewNetNS for callers without a testing.TB (the benchmark); the caller must Close it.
func CreateNetNS(label string) (*NetNS, error) {
	return createNamedNetNS(uniqueName(label))
}

var labelRE = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

func uniqueName(label string) string {
	name := NamePrefix + randomID()
	if label = labelRE.ReplaceAllString(label, ""); label != "" {
		name += "-" + label
	}
	return name
}

func randomID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("reading random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

func createNamedNetNS(name string) (*NetNS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	h, err := ns.GetNS(filepath.Join(netnsRunDir, name))
	if err != nil {
		err = fmt.Errorf("opening netns %s: %w", name, err)
		if derr := deleteNamedNetNS(name); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return &NetNS{name: name, handle: h}, nil
}

func deleteNamedNetNS(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err == nil {
		return nil
	}
	if _, serr := os.Stat(filepath.Join(netnsRunDir, name)); errors.Is(serr, os.ErrNotExist) {
		return nil
	}
	return fmt.Errorf("ip netns del %s: %w: %s", name, err, bytes.TrimSpace(out))
}

// Name is the iproute2 name (`ip -n NAME`, `ip netns exec NAME`).
func (n *NetNS) Name() string { return n.name }

// Path is the bind-mounted nsfs file, the value a runtime passes as CNI_NETNS.
func (n *NetNS) Path() string { return filepath.Join(netnsRunDir, n.name) }

// Do runs f on an OS thread switched into the namespace; processes f starts inherit it.
func (n *NetNS) Do(f func() error) error {
	return n.handle.Do(func(ns.NetNS) error { return f() })
}

// Command prepares args to run inside the namespace via `ip netns exec`.
func (n *NetNS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...)
}

// Exec runs args inside the namespace and returns their stdout; a failure's error carries stderr.
func (n *NetNS) Exec(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return n.run(args...)
}

func (n *NetNS) run(args ...string) ([]byte, error) {
	cmd := n.Command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s in netns %s: %w: %s", strings.Join(args, " "), n.name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// Close drops the handle and deletes the namespace; it is safe to call twice.
func (n *NetNS) Close() error {
	var errs []error
	if n.handle != nil {
		if err := n.handle.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing handle of netns %s: %w", n.name, err))
		}
		n.handle = nil
	}
	if err := deleteNamedNetNS(n.name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
