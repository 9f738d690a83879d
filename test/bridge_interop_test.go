package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// referenceChainLeftovers are what the reference plugins leave in the host after the DEL of
// their last attachment, by design: portmap keeps its shared top-level chains and the jumps
// to them, firewall keeps CNI-FORWARD, CNI-ADMIN and the FORWARD jump. None is bridge-lite's,
// so the interop test tolerates exactly these lines and nothing else.
var referenceChainLeftovers = []string{
	// portmap (iptables backend)
	"nat: :CNI-HOSTPORT-DNAT",
	"nat: :CNI-HOSTPORT-MASQ",
	"nat: :CNI-HOSTPORT-SETMARK",
	"nat: -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
	"nat: -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
	"nat: -A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ",
	"nat: -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
	"nat: -A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000",
	// firewall (iptables backend)
	"filter: :CNI-ADMIN",
	"filter: :CNI-FORWARD",
	"filter: -A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
	"filter: -A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN",
}

// TestBridgeLiteChainedWithReferencePlugins runs bridge-lite first in a chain with the reference
// portmap, tuning and firewall plugins: each must find in bridge-lite's result what it needs,
// CHECK of the whole chain must pass, and DEL must remove everything bridge-lite made.
func TestBridgeLiteChainedWithReferencePlugins(t *testing.T) {
	for i, backend := range masqBackends {
		t.Run(backend, func(t *testing.T) {
			testChained(t, backend, "blchain-"+backend[:3], 182+i)
		})
	}
}

func testChained(t *testing.T, backend, bridge string, x int) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	for _, p := range []string{"portmap", "tuning", "firewall"} {
		bins.Require(t, p)
	}
	host := harness.NewHost(t)
	c := host.NewContainer(t)
	subnet := fmt.Sprintf("10.%d.0.0/24", x)
	n := newLiteNet(t, bins, "chain-"+backend, bridge, backend, fmt.Sprintf(`"subnet": %q`, subnet))
	list := harness.ConfList(t, n.conflist(
		`{"type": "portmap", "capabilities": {"portMappings": true}}`,
		`{"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}`,
		`{"type": "firewall", "backend": "iptables"}`,
	))
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)
	att := harness.Attachment(c, "chain-"+backend, "eth0")
	att.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}},
	}

	raw, err := rt.Add(list, att)
	if err != nil {
		t.Fatalf("ADD of the chain: %v", err)
	}
	t.Cleanup(func() { _ = rt.Del(list, att) })
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		t.Fatalf("converting ADD result: %v", err)
	}
	ip, err := singleIPv4(res, mustCIDR(t, subnet))
	if err != nil {
		t.Fatalf("ADD of the chain: %v", err)
	}

	// portmap: the outside reaches the container through the host's port 8080.
	harness.StartWhoami(t, c, "tcp4", 80)
	seen, err := harness.AskWhoami(host.Ext, "tcp4", net.JoinHostPort(harness.HostUplinkIP, "8080"))
	if err != nil {
		t.Errorf("outside -> host:8080 -> container:80: %v", err)
	} else if seen != harness.ExtUplinkIP {
		t.Errorf("container saw the connection from %s, want the outside's address %s", seen, harness.ExtUplinkIP)
	}
	// tuning: the sysctl is set in the container, on the interface bridge-lite made.
	if out, err := c.Exec(t, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_filter"); err != nil {
		t.Errorf("reading arp_filter in the container: %v", err)
	} else if got := strings.TrimSpace(string(out)); got != "1" {
		t.Errorf("container eth0 arp_filter = %s, want 1 (set by tuning)", got)
	}
	// firewall: its forward rules name the address bridge-lite returned.
	if out, err := host.Exec(t, "iptables-save", "-t", "filter"); err != nil {
		t.Errorf("iptables-save: %v", err)
	} else if !hasRule(string(out), "CNI-FORWARD", ip) {
		t.Errorf("firewall made no CNI-FORWARD rule for %s:\n%s", ip, out)
	}
	assertMasqueraded(t, host, backend, ip)

	if err := rt.Check(list, att); err != nil {
		t.Errorf("CHECK of the chain: %v", err)
	}
	if err := rt.Del(list, att); err != nil {
		t.Fatalf("DEL of the chain: %v", err)
	}

	left, err := harness.FindLeftovers(host, n.leftoverOptions(c))
	if err != nil {
		t.Fatalf("inspecting host: %v", err)
	}
	var tolerated []string
	left.IPTables = slices.DeleteFunc(left.IPTables, func(l string) bool {
		known := slices.Contains(referenceChainLeftovers, strings.TrimPrefix(l, "ipv4 "))
		if known {
			tolerated = append(tolerated, l)
		}
		return known
	})
	t.Logf("tolerated %d reference-plugin iptables lines", len(tolerated))
	if !left.Empty() {
		t.Errorf("leftovers after DEL of the chain:\n%s", left)
	}
}

// hasRule reports whether iptables-save output has a rule in chain mentioning ip.
func hasRule(save, chain, ip string) bool {
	for _, l := range strings.Split(save, "\n") {
		if strings.HasPrefix(l, "-A "+chain+" ") && containsAddr(l, ip) {
			return true
		}
	}
	return false
}

// TestBridgeLiteSharesHostLocalStore alternates attachments made by the reference bridge with
// the reference host-local binary and by bridge-lite with its in-process host-local on one
// network name and data dir: both must see each other's reservations, never hand out an address
// twice, and release only their own.
func TestBridgeLiteSharesHostLocalStore(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	bins.Require(t, "bridge-lite")
	bins.Require(t, "bridge")
	bins.Require(t, "host-local")
	host := harness.NewHost(t)
	const (
		name    = "sharednet"
		subnet  = "10.185.0.0/24"
		refBr   = "blshare-ref"
		liteBr  = "blshare-lite"
		perKind = 10
	)
	tmp := t.TempDir()
	dataDir, stateDir := filepath.Join(tmp, "ipam"), filepath.Join(tmp, "state")
	ipam := fmt.Sprintf(`{"type": "host-local", "subnet": %q, "dataDir": %q}`, subnet, dataDir)
	lists := []*libcni.NetworkConfigList{
		harness.ConfList(t, fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [
			{"type": "bridge", "bridge": %q, "ipam": %s}]}`, name, refBr, ipam)),
		harness.ConfList(t, fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [
			{"type": "bridge-lite", "bridge": %q, "stateDir": %q, "ipam": %s}]}`, name, liteBr, stateDir, ipam)),
	}
	kinds := []string{"reference bridge", "bridge-lite"}
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)

	cs := newContainers(t, host, 2*perKind)
	atts := make([]*libcni.RuntimeConf, len(cs))
	owner := map[string]string{} // address -> container ID
	for i, c := range cs {
		kind := i % 2
		atts[i] = harness.Attachment(c, fmt.Sprintf("share-%02d", i), "eth0")
		raw, err := rt.Add(lists[kind], atts[i])
		if err != nil {
			t.Fatalf("ADD %d through %s: %v", i, kinds[kind], err)
		}
		t.Cleanup(func() { _ = rt.Del(lists[kind], atts[i]) })
		res, err := types100.NewResultFromResult(raw)
		if err != nil {
			t.Fatalf("converting ADD result: %v", err)
		}
		ip, err := singleIPv4(res, mustCIDR(t, subnet))
		if err != nil {
			t.Fatalf("ADD %d through %s: %v", i, kinds[kind], err)
		}
		if prev, dup := owner[ip]; dup {
			t.Fatalf("ADD %d through %s got %s, already reserved for %s", i, kinds[kind], ip, prev)
		}
		owner[ip] = atts[i].ContainerID
	}

	netDir := filepath.Join(dataDir, name)
	reserved := reservations(t, netDir)
	if len(reserved) != 2*perKind {
		t.Errorf("%s holds %d reservations, want %d: %v", netDir, len(reserved), 2*perKind, reserved)
	}
	for ip, id := range owner {
		if got := reserved[ip]; got != id {
			t.Errorf("reservation of %s names %q, want %q", ip, got, id)
		}
	}

	for i := range cs {
		if err := rt.Del(lists[i%2], atts[i]); err != nil {
			t.Errorf("DEL %d through %s: %v", i, kinds[i%2], err)
		}
		if i == perKind-1 {
			// Half of each kind gone: each plugin released only its own.
			if got := len(reservations(t, netDir)); got != perKind {
				t.Errorf("after %d DELs %d reservations remain, want %d", i+1, got, perKind)
			}
		}
	}
	ents, err := os.ReadDir(netDir)
	if err != nil {
		t.Fatalf("listing %s: %v", netDir, err)
	}
	for _, e := range ents {
		if e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip.") {
			t.Errorf("%s still holds %s after every DEL", netDir, e.Name())
		}
	}
	harness.AssertNoLeftovers(t, host, harness.LeftoverOptions{
		AllowLinks:   []string{refBr, liteBr},
		IPAMDataDirs: []string{dataDir},
		StateDirs:    []string{stateDir},
		Containers:   cs,
	})
}

// reservations maps each address reserved in a host-local network dir to the container ID in its
// file (the first line).
func reservations(t testing.TB, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing %s: %v", dir, err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if net.ParseIP(e.Name()) == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("reading reservation %s: %v", e.Name(), err)
		}
		id, _, _ := strings.Cut(string(data), "\n")
		out[e.Name()] = strings.TrimSpace(id)
	}
	return out
}
