package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// cniCLI runs `nsnet cni ...` inside a sandbox host netns with its state
// and result cache in temp dirs.
type cniCLI struct {
	t         *testing.T
	nsnet     string
	host      *harness.Host
	confDir   string
	stateRoot string
}

func newCNICLI(t *testing.T, bins *harness.Binaries, host *harness.Host) *cniCLI {
	t.Helper()
	bins.Require(t, "bridge-lite")
	bins.Require(t, "portmap-lite")
	return &cniCLI{t: t, nsnet: bins.RequireNsnet(t), host: host, confDir: t.TempDir(), stateRoot: t.TempDir()}
}

// run returns stdout, stderr and the exit code of nsnet cni args, which
// always get the test's conf dir.
func (e *cniCLI) run(args ...string) (string, string, int) {
	e.t.Helper()
	cmd := exec.Command(e.nsnet, append([]string{"cni", "--conf-dir", e.confDir}, args...)...)
	cmd.Env = append(os.Environ(), "NSNET_CNI_ROOT="+e.stateRoot)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := e.host.Do(cmd.Run)
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return stdout.String(), stderr.String(), exitErr.ExitCode()
	case err != nil:
		e.t.Fatalf("running nsnet cni %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), 0
}

func (e *cniCLI) mustRun(args ...string) string {
	e.t.Helper()
	out, stderr, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("nsnet cni %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return out
}

// cachedResults lists the libcni result cache.
func (e *cniCLI) cachedResults() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.stateRoot, "cache", "results"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		names = append(names, d.Name())
	}
	return names
}

var tableIPv4RE = regexp.MustCompile(`(?m)^eth0\s+(\d+\.\d+\.\d+\.\d+)/(\d+)\s+(\S+)\s+([0-9a-f:]{17})$`)

// tableIP returns the address and gateway of eth0 in `nsnet cni add` table output.
func tableIP(t *testing.T, out string) (ip, gw string) {
	t.Helper()
	m := tableIPv4RE.FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(out, "INTERFACE") {
		t.Fatalf("nsnet cni add printed no eth0 row with address, gateway and MAC:\n%s", out)
	}
	return m[1], m[3]
}

// assertEgress checks that c reaches its gateway and, masqueraded behind
// the host's uplink address, the ext netns.
func assertEgress(t *testing.T, host *harness.Host, c *harness.NetNS, gw string) {
	t.Helper()
	if err := harness.Ping(t, c, gw); err != nil {
		t.Errorf("container cannot reach its gateway: %v", err)
	}
	harness.StartWhoami(t, host.Ext, "tcp4", 19090)
	assertWhoami(t, "container → ext", c, "tcp4", harness.ExtUplinkIP+":19090", harness.HostUplinkIP)
}

// TestCNICLIConfList drives `nsnet cni` against a conflist of its own:
// add (table and JSON output, a published port, default and explicit
// container IDs), a refused second add, check, status, gc with --valid,
// del by path of an attachment added by netns name, and a mistyped network.
func TestCNICLIConfList(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	e := newCNICLI(t, bins, host)
	dirs := t.TempDir()
	conflist := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "nsntcli", "plugins": [
		{"type": "bridge-lite", "bridge": "cnt0", "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
		 "hairpinMode": true, "stateDir": %q,
		 "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.210.0.0/24"}]]}},
		{"type": "portmap-lite", "capabilities": {"portMappings": true}, "stateDir": %q}]}`,
		filepath.Join(dirs, "bridge"), filepath.Join(dirs, "ipam"), filepath.Join(dirs, "portmap"))
	if err := os.WriteFile(filepath.Join(e.confDir, "50-nsntcli.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	c1, c2 := host.NewContainer(t), host.NewContainer(t)
	bin := "--bin-dir=" + bins.ProjectDir

	out := e.mustRun("add", "nsntcli", c1.Name(), bin,
		"--cap-args", `{"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}`)
	ip, gw := tableIP(t, out)
	if !strings.HasPrefix(ip, "10.210.0.") || gw != "10.210.0.1" {
		t.Errorf("address %s via %s, want one of 10.210.0.0/24 via 10.210.0.1", ip, gw)
	}
	assertEgress(t, host, c1, gw)
	harness.StartWhoami(t, c1, "tcp4", 80)
	assertWhoami(t, "ext → published 18080", host.Ext, "tcp4", hostPort(18080), harness.ExtUplinkIP)

	e.mustRun("check", "nsntcli", c1.Name(), bin)
	if _, stderr, code := e.run("add", "nsntcli", c1.Name(), bin); code != 1 || !strings.Contains(stderr, "already attached") {
		t.Errorf("second add of the same attachment: exit %d: %s", code, stderr)
	}
	if err := harness.Ping(t, c1, gw); err != nil {
		t.Errorf("the refused second add broke the first attachment: %v", err)
	}
	if got := e.mustRun("status", "nsntcli", bin); got != "nsntcli: ready\n" {
		t.Errorf("status printed %q", got)
	}

	out = e.mustRun("add", "nsntcli", c2.Path(), bin, "--id", "nsnt-cli-two", "--json", "-p", "18081:80")
	var res types100.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) != 1 || res.CNIVersion != "1.1.0" {
		t.Fatalf("--json printed %q (%v), want a 1.1.0 result with one address", out, err)
	}
	if err := harness.Ping(t, c2, res.IPs[0].Gateway.String()); err != nil {
		t.Errorf("second container: %v", err)
	}
	var c1Cache string
	for _, f := range e.cachedResults() {
		if !strings.Contains(f, "nsnt-cli-two") {
			c1Cache = f
		}
	}
	c1ID := strings.TrimSuffix(strings.TrimPrefix(c1Cache, "nsntcli-"), "-eth0")
	if c1ID == "" || len(e.cachedResults()) != 2 {
		t.Fatalf("result cache holds %v, want the two attachments", e.cachedResults())
	}
	if _, stderr, code := e.run("gc", "nsntcli", bin, "--valid", "bad"); code != 1 || !strings.Contains(stderr, "CONTAINER-ID/IFNAME") {
		t.Errorf("gc --valid bad: exit %d: %s", code, stderr)
	}
	e.mustRun("gc", "nsntcli", bin, "--valid", c1ID+"/eth0")
	if got := e.cachedResults(); len(got) != 1 || got[0] != c1Cache {
		t.Errorf("after gc the cache holds %v, want only %s", got, c1Cache)
	}
	if err := harness.Ping(t, c1, gw); err != nil {
		t.Errorf("gc removed the valid attachment: %v", err)
	}

	// Added by name, deleted by path: the default container ID is the same.
	e.mustRun("del", "nsntcli", c1.Path(), bin)
	e.mustRun("del", "nsntcli", c1.Path(), bin)
	if got := e.cachedResults(); len(got) != 0 {
		t.Errorf("after del the cache holds %v", got)
	}
	// portmap-lite refuses the mapping after bridge-lite attached c1: the
	// DEL that follows the failed ADD removes bridge-lite's part too.
	_, stderr, code := e.run("add", "nsntcli", c1.Name(), bin, "--cap-args", `{"portMappings": [{"hostPort": 0, "containerPort": 80}]}`)
	if code != 1 || !strings.Contains(stderr, "portmap-lite") {
		t.Errorf("add with a bad port mapping: exit %d: %s", code, stderr)
	}
	harness.AssertNoLeftovers(t, host, harness.LeftoverOptions{
		AllowLinks:   []string{"cnt0"},
		IPAMDataDirs: []string{filepath.Join(dirs, "ipam")},
		StateDirs:    []string{filepath.Join(dirs, "bridge"), filepath.Join(dirs, "portmap")},
		Containers:   []*harness.NetNS{c1, c2},
	})

	_, stderr, code = e.run("add", "nsnt-no-such-net", c1.Name(), bin)
	if code != 1 || !strings.Contains(stderr, `network "nsnt-no-such-net" is not defined in `+e.confDir) || !strings.Contains(stderr, "nsntcli") {
		t.Errorf("unknown network: exit %d: %s", code, stderr)
	}
	if _, stderr, code := e.run("add", "nsntcli", "nsnt-no-such-netns", bin); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing netns: exit %d: %s", code, stderr)
	}
}

// TestCNICLIEmbedded: with no file defining bridge-lite, nsnet cni uses the
// built-in network, whose subnet avoids the one already on the host
// (10.88.0.0/16 here) and stays the same for later containers although the
// bridge's own route then covers it; plugins are found next to nsnet.
func TestCNICLIEmbedded(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	e := newCNICLI(t, bins, host)
	for _, args := range [][]string{
		{"ip", "link", "add", "nsnttaken0", "type", "veth", "peer", "name", "nsnttaken1"},
		{"ip", "addr", "add", "10.88.0.1/16", "dev", "nsnttaken0"},
		{"ip", "link", "set", "nsnttaken0", "up"},
	} {
		if _, err := host.Exec(t, args...); err != nil {
			t.Fatal(err)
		}
	}
	c1, c2 := host.NewContainer(t), host.NewContainer(t)

	ip, gw := tableIP(t, e.mustRun("add", "bridge-lite", c1.Name(), "-p", "18080:80"))
	if !strings.HasPrefix(ip, "10.89.") || gw != "10.89.0.1" {
		t.Errorf("built-in network gave %s via %s, want 10.89.0.0/16 (10.88.0.0/16 is taken)", ip, gw)
	}
	assertEgress(t, host, c1, gw)
	harness.StartWhoami(t, c1, "tcp4", 80)
	assertWhoami(t, "ext → published 18080", host.Ext, "tcp4", hostPort(18080), harness.ExtUplinkIP)

	ip2, gw2 := tableIP(t, e.mustRun("add", "bridge-lite", c2.Name()))
	if !strings.HasPrefix(ip2, "10.89.") || gw2 != gw || ip2 == ip {
		t.Errorf("second container got %s via %s, want another address of 10.89.0.0/16 via %s", ip2, gw2, gw)
	}
	if err := harness.Ping(t, c2, ip); err != nil {
		t.Errorf("container → container: %v", err)
	}
	e.mustRun("check", "bridge-lite", c1.Name())
	if got := e.mustRun("status", "bridge-lite"); got != "bridge-lite: ready\n" {
		t.Errorf("status printed %q", got)
	}
	e.mustRun("del", "bridge-lite", c1.Name())
	// The netns is gone before DEL, as after a crash: DEL still cleans up.
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	e.mustRun("del", "bridge-lite", c2.Name())
	if got := e.cachedResults(); len(got) != 0 {
		t.Errorf("after del the cache holds %v", got)
	}
	harness.AssertNoLeftovers(t, host, harness.LeftoverOptions{
		AllowLinks:   []string{"nsnet0", "nsnttaken0", "nsnttaken1"},
		IPAMDataDirs: []string{filepath.Join(e.stateRoot, "ipam")},
		StateDirs:    []string{filepath.Join(e.stateRoot, "bridge-lite"), filepath.Join(e.stateRoot, "portmap-lite")},
		Containers:   []*harness.NetNS{c1},
	})
}
