package test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nsnet/nsnet/test/harness"
)

// specNet is a bridge-lite network whose plugin keys live in a map, so a test can change or
// drop any of them, with IPAM and attachment state in per-test temp dirs.
type specNet struct {
	name       string
	cniVersion string
	bridge     string
	subnet     string
	dataDir    string
	stateDir   string
	plugin     map[string]any
}

// newSpecNet is a gateway+masquerade network on bridge with host-local IPAM over subnet.
func newSpecNet(t *testing.T, cniVersion, bridge, subnet string) *specNet {
	t.Helper()
	tmp := t.TempDir()
	n := &specNet{
		name:       "specnet",
		cniVersion: cniVersion,
		bridge:     bridge,
		subnet:     subnet,
		dataDir:    filepath.Join(tmp, "ipam"),
		stateDir:   filepath.Join(tmp, "state"),
	}
	n.plugin = map[string]any{
		"type": "bridge-lite", "bridge": bridge,
		"isGateway": true, "isDefaultGateway": true, "ipMasq": true,
		"stateDir": n.stateDir,
		"ipam":     map[string]any{"type": "host-local", "subnet": subnet, "dataDir": n.dataDir},
	}
	return n
}

func (n *specNet) ipam() map[string]any { return n.plugin["ipam"].(map[string]any) }

// conf is the request config a runtime hands the plugin: the plugin keys plus name and
// cniVersion, then extra on top (a nil value removes the key).
func (n *specNet) conf(t testing.TB, extra map[string]any) []byte {
	t.Helper()
	m := deepCopy(t, n.plugin)
	m["name"] = n.name
	m["cniVersion"] = n.cniVersion
	for k, v := range extra {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("encoding config: %v", err)
	}
	return b
}

// confList is the network as a one-plugin conflist for libcni.
func (n *specNet) confList(t testing.TB) *libcni.NetworkConfigList {
	t.Helper()
	b, err := json.Marshal(map[string]any{"cniVersion": n.cniVersion, "name": n.name, "plugins": []any{n.plugin}})
	if err != nil {
		t.Fatalf("encoding conflist: %v", err)
	}
	return harness.ConfList(t, string(b))
}

func deepCopy(t testing.TB, m map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("copying config: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("copying config: %v", err)
	}
	return out
}

func (n *specNet) leftoverOptions(containers ...*harness.NetNS) harness.LeftoverOptions {
	return harness.LeftoverOptions{
		AllowLinks:   []string{n.bridge},
		IPAMDataDirs: []string{n.dataDir},
		StateDirs:    []string{n.stateDir},
		Containers:   containers,
	}
}

// stateFile is where bridge-lite keeps the record of an attachment.
func (n *specNet) stateFile(containerID, ifName string) string {
	return filepath.Join(n.stateDir, containerID+":"+ifName+".json")
}

// stateFiles lists the files in the state dir other than its lock.
func (n *specNet) stateFiles(t testing.TB) []string {
	t.Helper()
	return dirFiles(t, n.stateDir, func(name string) bool { return name == "lock" })
}

// ipamFile is host-local's reservation file of ip in network.
func (n *specNet) ipamFile(network, ip string) string {
	return filepath.Join(n.dataDir, network, ip)
}

func dirFiles(t testing.TB, dir string, skip func(string) bool) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && !skip(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func assertExists(t testing.TB, path string, want bool) {
	t.Helper()
	_, err := os.Stat(path)
	switch {
	case want && err != nil:
		t.Errorf("%s should exist: %v", path, err)
	case !want && err == nil:
		t.Errorf("%s should be gone but exists", path)
	case !want && !errors.Is(err, fs.ErrNotExist):
		t.Errorf("stat %s: %v", path, err)
	}
}

// spec runs bridge-lite by raw exec from inside the sandbox host, as a runtime would.
type spec struct {
	t      testing.TB
	host   *harness.Host
	bins   *harness.Binaries
	plugin string
}

func newSpec(t testing.TB, host *harness.Host, bins *harness.Binaries) *spec {
	t.Helper()
	return &spec{t: t, host: host, bins: bins, plugin: bins.Require(t, "bridge-lite")}
}

// inv is an invocation of command for c as ifName with config; CNI_PATH is the test's.
func (s *spec) inv(command, containerID string, c *harness.NetNS, ifName string, config []byte) harness.Invocation {
	inv := harness.Invocation{Command: command, ContainerID: containerID, IfName: ifName, Path: s.bins.CNIPath, Config: config}
	if c != nil {
		inv.NetNS = c.Path()
	}
	return inv
}

func (s *spec) exec(inv harness.Invocation) *harness.PluginOutput {
	s.t.Helper()
	out, err := harness.ExecPlugin(s.host.NetNS, s.plugin, inv)
	if err != nil {
		s.t.Fatalf("running bridge-lite %s: %v", inv.Command, err)
	}
	return out
}

// mustSucceed runs inv and fails the test unless the plugin exited 0.
func (s *spec) mustSucceed(inv harness.Invocation) *harness.PluginOutput {
	s.t.Helper()
	out := s.exec(inv)
	if out.Failed() {
		s.t.Fatalf("bridge-lite %s %s failed:\n%s", inv.Command, inv.ContainerID, out)
	}
	return out
}

// assertNoOutput checks a successful verb that has no result (CHECK, DEL, GC) printed nothing.
func assertNoOutput(t testing.TB, verb string, out *harness.PluginOutput) {
	t.Helper()
	if len(strings.TrimSpace(string(out.Stdout))) != 0 {
		t.Errorf("%s printed %q on stdout, want nothing", verb, out.Stdout)
	}
}

// add runs a raw ADD and returns the result converted to 1.0.0.
func (s *spec) add(containerID string, c *harness.NetNS, ifName string, config []byte) (*harness.PluginOutput, *types100.Result) {
	s.t.Helper()
	out := s.mustSucceed(s.inv("ADD", containerID, c, ifName, config))
	res, err := out.Result100()
	if err != nil {
		s.t.Fatalf("ADD %s: %v", containerID, err)
	}
	return out, res
}

// requireCNIError asserts the plugin failed with a parseable error on stdout carrying code,
// and that msg (if given) appears in the message; it returns the error.
func requireCNIError(t testing.TB, out *harness.PluginOutput, code uint, msg string) *types.Error {
	t.Helper()
	if !out.Failed() {
		t.Fatalf("plugin succeeded, want error code %d:\n%s", code, out)
	}
	if out.Err == nil {
		t.Fatalf("no CNI error structure on stdout:\n%s", out)
	}
	if out.Err.Code != code {
		t.Errorf("error code %d (%q), want %d", out.Err.Code, out.Err.Msg, code)
	}
	if msg != "" && !strings.Contains(out.Err.Msg+" "+out.Err.Details, msg) {
		t.Errorf("error message %q does not mention %q", out.Err.Msg, msg)
	}
	return out.Err
}

// netlinkIn returns a netlink handle bound to n's namespace; it is closed when the test ends.
func netlinkIn(t testing.TB, n *harness.NetNS) *netlink.Handle {
	t.Helper()
	fd, err := netns.GetFromPath(n.Path())
	if err != nil {
		t.Fatalf("opening netns %s: %v", n.Name(), err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", n.Name(), err)
	}
	t.Cleanup(h.Close)
	return h
}

func linkIn(t testing.TB, n *harness.NetNS, name string) netlink.Link {
	t.Helper()
	l, err := netlinkIn(t, n).LinkByName(name)
	if err != nil {
		t.Fatalf("link %s in %s: %v", name, n.Name(), err)
	}
	return l
}

// assertResultMatchesKernel checks a bridge-lite ADD result against the interfaces, addresses
// and routes that exist in the host and container c.
func assertResultMatchesKernel(t testing.TB, host *harness.Host, c *harness.NetNS, bridge, ifName string, res *types100.Result) {
	t.Helper()
	if len(res.Interfaces) != 3 {
		t.Fatalf("result has %d interfaces, want 3 (bridge, host veth, container): %+v", len(res.Interfaces), res.Interfaces)
	}
	brIf, hostIf, contIf := res.Interfaces[0], res.Interfaces[1], res.Interfaces[2]
	if brIf.Name != bridge || brIf.Sandbox != "" {
		t.Errorf("interfaces[0] = %+v, want bridge %s outside any sandbox", brIf, bridge)
	}
	if hostIf.Sandbox != "" {
		t.Errorf("host veth interfaces[1] has sandbox %q, want none", hostIf.Sandbox)
	}
	if contIf.Name != ifName || contIf.Sandbox != c.Path() {
		t.Errorf("interfaces[2] = %+v, want name %s, sandbox %s", contIf, ifName, c.Path())
	}
	if len(res.IPs) == 0 {
		t.Fatalf("result has no IPs")
	}

	hostNl, contNl := netlinkIn(t, host.NetNS), netlinkIn(t, c)
	br, err := hostNl.LinkByName(bridge)
	if err != nil {
		t.Fatalf("bridge %s in host: %v", bridge, err)
	}
	if got := br.Attrs().HardwareAddr.String(); got != brIf.Mac {
		t.Errorf("bridge MAC is %s, result says %s", got, brIf.Mac)
	}
	hv, err := hostNl.LinkByName(hostIf.Name)
	if err != nil {
		t.Errorf("host veth %s from the result is not in the host: %v", hostIf.Name, err)
	} else {
		if hv.Type() != "veth" {
			t.Errorf("%s is a %s, want veth", hostIf.Name, hv.Type())
		}
		if hv.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("host veth %s has master index %d, want bridge %s (%d)", hostIf.Name, hv.Attrs().MasterIndex, bridge, br.Attrs().Index)
		}
		if got := hv.Attrs().HardwareAddr.String(); hostIf.Mac != "" && got != hostIf.Mac {
			t.Errorf("host veth MAC is %s, result says %s", got, hostIf.Mac)
		}
	}

	eth, err := contNl.LinkByName(ifName)
	if err != nil {
		t.Fatalf("%s in container %s: %v", ifName, c.Name(), err)
	}
	if got := eth.Attrs().HardwareAddr.String(); got != contIf.Mac {
		t.Errorf("container %s MAC is %s, result says %s", ifName, got, contIf.Mac)
	}
	addrs, err := contNl.AddrList(eth, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("listing addresses of %s: %v", ifName, err)
	}
	for i, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != 2 {
			t.Errorf("ips[%d].interface = %v, want 2", i, ipc.Interface)
		}
		found := false
		for _, a := range addrs {
			if a.IP.Equal(ipc.Address.IP) && a.Mask.String() == ipc.Address.Mask.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("container %s lacks %s from the result; has %v", ifName, ipc.Address.String(), addrs)
		}
	}
	gw := res.IPs[0].Gateway
	if gw == nil {
		t.Fatalf("ips[0] has no gateway")
	}
	if !hasDefaultRouteVia(t, contNl, eth, gw) {
		t.Errorf("container has no default route via %s", gw)
	}
}

func hasDefaultRouteVia(t testing.TB, nl *netlink.Handle, link netlink.Link, gw net.IP) bool {
	t.Helper()
	routes, err := nl.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("listing routes: %v", err)
	}
	for _, r := range routes {
		isDefault := r.Dst == nil
		if r.Dst != nil {
			ones, _ := r.Dst.Mask.Size()
			isDefault = ones == 0
		}
		if isDefault && r.Gw.Equal(gw) {
			return true
		}
	}
	return false
}

var nftMasqMapRE = regexp.MustCompile(`(?m)^\s*(set|map) (n4_[0-9A-Za-z_]+) \{`)

// masqRuleset returns the host's nsnet-masq table as nft lists it ("" when there is none).
func masqRuleset(t testing.TB, host *harness.Host) string {
	t.Helper()
	out, err := host.Exec(t, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("listing nftables ruleset: %v", err)
	}
	s := string(out)
	i := strings.Index(s, "table inet nsnet-masq")
	if i < 0 {
		return ""
	}
	return s[i:]
}

// masqContains reports whether the nsnet-masq table holds an element for ip.
func masqContains(t testing.TB, host *harness.Host, ip string) bool {
	t.Helper()
	return regexp.MustCompile(`[\s{,]` + regexp.QuoteMeta(ip) + `[\s,}:]`).MatchString(masqRuleset(t, host))
}
