package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// masqBackends are the values of bridge-lite's "ipMasqBackend" key; tests whose outcome depends
// on the masquerade run once per backend.
var masqBackends = []string{"nftables", "iptables"}

// liteNet is a bridge-lite network (bridge as gateway, masquerade, in-process host-local IPAM)
// whose IPAM data and attachment records live in the test's temp dir, so leftovers are easy
// to find and nothing touches /var/lib/cni.
type liteNet struct {
	name       string
	cniVersion string
	bridge     string
	backend    string // ipMasqBackend
	// ipamRanges are the host-local keys choosing addresses, a JSON fragment such as
	// `"subnet": "10.170.0.0/24"` or `"ranges": [[...]]`.
	ipamRanges string
	dataDir    string
	stateDir   string
	cniPath    string
}

func newLiteNet(t *testing.T, bins *harness.Binaries, name, bridge, backend, ipamRanges string) *liteNet {
	t.Helper()
	if len(bridge) > 15 {
		t.Fatalf("bridge name %q is longer than 15 bytes", bridge)
	}
	bins.Require(t, "bridge-lite")
	tmp := t.TempDir()
	return &liteNet{
		name:       name,
		cniVersion: "1.0.0",
		bridge:     bridge,
		backend:    backend,
		ipamRanges: ipamRanges,
		dataDir:    filepath.Join(tmp, "ipam"),
		stateDir:   filepath.Join(tmp, "state"),
		cniPath:    bins.CNIPath,
	}
}

// plugin is the bridge-lite entry of a conflist.
func (n *liteNet) plugin() string {
	return fmt.Sprintf(`{"type": "bridge-lite", "bridge": %q, "isGateway": true, "isDefaultGateway": true,
		"ipMasq": true, "ipMasqBackend": %q, "stateDir": %q,
		"ipam": {"type": "host-local", "dataDir": %q, %s}}`,
		n.bridge, n.backend, n.stateDir, n.dataDir, n.ipamRanges)
}

// conflist is a network configuration list of bridge-lite followed by the extra plugin entries.
func (n *liteNet) conflist(extra ...string) string {
	plugins := append([]string{n.plugin()}, extra...)
	return fmt.Sprintf(`{"cniVersion": %q, "name": %q, "plugins": [%s]}`, n.cniVersion, n.name, strings.Join(plugins, ",\n"))
}

// netconf is the stdin of a direct bridge-lite call in cniVersion version, with extra top-level
// keys (e.g. "cni.dev/valid-attachments" for GC).
func (n *liteNet) netconf(t testing.TB, version string, extra map[string]any) []byte {
	t.Helper()
	var conf map[string]any
	if err := json.Unmarshal([]byte(n.plugin()), &conf); err != nil {
		t.Fatalf("decoding bridge-lite config: %v", err)
	}
	conf["name"], conf["cniVersion"] = n.name, version
	for k, v := range extra {
		conf[k] = v
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatalf("encoding bridge-lite config: %v", err)
	}
	return b
}

// invoke runs bridge-lite directly from the host netns, as a runtime there would.
func (n *liteNet) invoke(host *harness.Host, command, containerID, netnsPath string, conf []byte) (*harness.PluginOutput, error) {
	out, err := harness.ExecPlugin(host.NetNS, "bridge-lite", harness.Invocation{
		Command:     command,
		ContainerID: containerID,
		NetNS:       netnsPath,
		IfName:      ifName(command),
		Path:        n.cniPath,
		Config:      conf,
	})
	if err != nil {
		return out, err
	}
	if out.Failed() {
		return out, fmt.Errorf("bridge-lite %s of %q failed: %s", command, containerID, out)
	}
	return out, nil
}

// ifName is the container interface of every attachment these tests make; GC and STATUS take none.
func ifName(command string) string {
	if command == "GC" || command == "STATUS" {
		return ""
	}
	return "eth0"
}

// add ADDs container c as containerID by direct exec and returns the result.
func (n *liteNet) add(t testing.TB, host *harness.Host, c *harness.NetNS, containerID string) (*types100.Result, error) {
	out, err := n.invoke(host, "ADD", containerID, c.Path(), n.netconf(t, n.cniVersion, nil))
	if err != nil {
		return nil, err
	}
	return out.Result100()
}

// del DELs containerID by direct exec.
func (n *liteNet) del(t testing.TB, host *harness.Host, c *harness.NetNS, containerID string) error {
	_, err := n.invoke(host, "DEL", containerID, c.Path(), n.netconf(t, n.cniVersion, nil))
	return err
}

// gc runs GC (cniVersion 1.1.0) keeping only the attachments named by the container IDs.
func (n *liteNet) gc(t testing.TB, host *harness.Host, keep ...string) error {
	valid := []map[string]string{}
	for _, id := range keep {
		valid = append(valid, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	conf := n.netconf(t, "1.1.0", map[string]any{"cni.dev/valid-attachments": valid})
	_, err := n.invoke(host, "GC", "", "", conf)
	return err
}

// leftoverOptions allows the bridge to stay and points at the network's IPAM and state dirs.
func (n *liteNet) leftoverOptions(containers ...*harness.NetNS) harness.LeftoverOptions {
	return harness.LeftoverOptions{
		AllowLinks:   []string{n.bridge},
		IPAMDataDirs: []string{n.dataDir},
		StateDirs:    []string{n.stateDir},
		Containers:   containers,
	}
}

// ipamDir is host-local's per-network directory, <dataDir>/<name>.
func (n *liteNet) ipamDir() string { return filepath.Join(n.dataDir, n.name) }

// resultAddrs returns the result's container addresses without prefix length, IPv4 and IPv6 apart.
func resultAddrs(res *types100.Result) (v4, v6 []string) {
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = append(v4, ipc.Address.IP.String())
		} else {
			v6 = append(v6, ipc.Address.IP.String())
		}
	}
	return v4, v6
}

// singleIPv4 returns the only IPv4 address of res, failing when there is not exactly one.
func singleIPv4(res *types100.Result, subnet *net.IPNet) (string, error) {
	v4, v6 := resultAddrs(res)
	if len(v4) != 1 || len(v6) != 0 {
		return "", fmt.Errorf("result has IPv4 %v and IPv6 %v, want exactly one IPv4 address", v4, v6)
	}
	if !subnet.Contains(net.ParseIP(v4[0])) {
		return "", fmt.Errorf("address %s is outside %s", v4[0], subnet)
	}
	return v4[0], nil
}

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatalf("parsing %s: %v", s, err)
	}
	return n
}

// masqDump returns the masquerade configuration of one backend in host: the bridge-lite nft
// table, or the nat tables of iptables and ip6tables.
func masqDump(t testing.TB, host *harness.Host, backend string) string {
	t.Helper()
	if backend == "nftables" {
		out, err := host.Exec(t, "nft", "list", "ruleset")
		if err != nil {
			t.Fatalf("listing nftables ruleset: %v", err)
		}
		// Only bridge-lite's own table: iptables-nft keeps its rules in nftables too.
		var b strings.Builder
		in := false
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "table ") {
				in = strings.HasPrefix(l, "table inet nsnet-masq ")
			}
			if in {
				b.WriteString(l + "\n")
			}
		}
		return b.String()
	}
	var b strings.Builder
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := host.Exec(t, cmd, "-t", "nat")
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		b.Write(out)
	}
	return b.String()
}

// containsAddr reports whether text mentions ip as a whole address (10.1.0.2 does not match
// inside 10.1.0.23).
func containsAddr(text, ip string) bool {
	re := regexp.MustCompile(`(^|[^0-9a-fA-F:.])` + regexp.QuoteMeta(ip) + `([^0-9a-fA-F:.]|$)`)
	return re.MatchString(text)
}

// assertMasqueraded checks that exactly the chosen backend masquerades every address.
func assertMasqueraded(t testing.TB, host *harness.Host, backend string, ips ...string) {
	t.Helper()
	other := "iptables"
	if backend == "iptables" {
		other = "nftables"
	}
	mine, theirs := masqDump(t, host, backend), masqDump(t, host, other)
	for _, ip := range ips {
		if !containsAddr(mine, ip) {
			t.Errorf("%s masquerade does not mention %s:\n%s", backend, ip, mine)
		}
		if containsAddr(theirs, ip) {
			t.Errorf("%s masquerade mentions %s although the network uses %s:\n%s", other, ip, backend, theirs)
		}
	}
}

// forEach runs f(i) for i in [0, n) on a bounded number of workers and returns the errors.
func forEach(n, workers int, f func(i int) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

// reportErrors fails the test with the first few of errs.
func reportErrors(t testing.TB, what string, errs []error) {
	t.Helper()
	if len(errs) == 0 {
		return
	}
	shown := errs[:min(len(errs), 5)]
	t.Fatalf("%s: %d failures, first ones:\n%v", what, len(errs), errors.Join(shown...))
}

// newContainers creates n container namespaces with a few workers; they are deleted when the
// test ends.
func newContainers(t *testing.T, host *harness.Host, n int) []*harness.NetNS {
	t.Helper()
	cs := make([]*harness.NetNS, n)
	errs := forEach(n, 8, func(i int) (err error) {
		cs[i], err = host.CreateContainer()
		return err
	})
	t.Cleanup(func() {
		for _, c := range cs {
			if c == nil {
				continue
			}
			if err := c.Close(); err != nil {
				t.Errorf("removing container netns %s: %v", c.Name(), err)
			}
		}
	})
	reportErrors(t, "creating container namespaces", errs)
	return cs
}

// tentativeAddrs lists the global IPv6 addresses of dev in netns n still doing duplicate address
// detection. Link-local ones are left out: the kernel makes them, and the container's traffic
// to its gateway does not need them.
func tentativeAddrs(t testing.TB, n *harness.NetNS, dev string) []string {
	t.Helper()
	out, err := n.Exec(t, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global")
	if err != nil {
		t.Fatalf("listing IPv6 addresses of %s in %s: %v", dev, n.Name(), err)
	}
	var tent []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "tentative") || strings.Contains(l, "dadfailed") {
			tent = append(tent, strings.TrimSpace(l))
		}
	}
	return tent
}

// filesMentioning returns the files directly in dir whose name or content contains s.
func filesMentioning(t testing.TB, dir, s string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	var hits []string
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("reading %s: %v", p, err)
		}
		if strings.Contains(e.Name(), s) || strings.Contains(string(data), s) {
			hits = append(hits, p)
		}
	}
	return hits
}
