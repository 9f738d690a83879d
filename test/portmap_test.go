package test

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsnet/nsnet/test/harness"
)

// pmSubtests runs f once per backend, with a bridge name and subnet number of its own.
func pmSubtests(t *testing.T, prefix string, x int, f func(t *testing.T, backend, bridge string, x int)) {
	for i, backend := range pmBackends {
		t.Run(backend, func(t *testing.T) {
			f(t, backend, fmt.Sprintf("%s-%s", prefix, backend[:3]), x+i)
		})
	}
}

// TestPortmapReachability publishes a TCP and a UDP port of one container and reaches it over
// every path a host port promises. The source address the container's server sees tells which
// NAT the packet went through:
//
//   - from outside, DNAT only: the client's own address is preserved;
//   - from the host to its own uplink address: DNAT in output, and no SNAT, because the host
//     picked its uplink address as the source and the container answers it through its
//     default route (the bridge), so the reply comes back through the host anyway;
//   - from 127.0.0.1 in the host: masqueraded to the bridge address, since the container
//     cannot answer a loopback address (and route_localnet lets the packet leave at all);
//   - from a second container on the bridge and from the container itself (hairpin):
//     masqueraded to the bridge address, else the reply would bypass the host's un-DNAT.
func TestPortmapReachability(t *testing.T) {
	pmSubtests(t, "pmreach", 220, testPortmapReachability)
}

func testPortmapReachability(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmreach-"+backend, bridge, backend, x, false)
	gw := fmt.Sprintf("10.%d.0.1", x)
	const port = 8080
	c1 := e.mustAttach(t, "reach-1", tcpMap(port, 80), udpMap(port, 80))
	c2 := e.mustAttach(t, "reach-2")
	harness.StartWhoami(t, c1.ns, "tcp4", 80)
	startUDPSink(t, c1.ns, 80) // the UDP whoami (see udpSink)
	if out, err := e.host.Exec(t, "cat", "/proc/sys/net/ipv4/conf/"+bridge+"/route_localnet"); err != nil {
		t.Errorf("reading route_localnet of %s: %v", bridge, err)
	} else if strings.TrimSpace(string(out)) != "1" {
		t.Errorf("route_localnet of %s is %s, want 1 (127.0.0.1:hostPort cannot work without it)", bridge, out)
	}

	paths := []struct {
		what string
		from *harness.NetNS
		addr string
		want string
	}{
		{"outside -> host uplink", e.host.Ext, hostPort(port), harness.ExtUplinkIP},
		{"host -> its own uplink address", e.host.NetNS, hostPort(port), harness.HostUplinkIP},
		{"host -> 127.0.0.1", e.host.NetNS, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), gw},
		{"second container -> host uplink (hairpin)", c2.ns, hostPort(port), gw},
		{"container itself -> host uplink (hairpin)", c1.ns, hostPort(port), gw},
	}
	for _, network := range []string{"tcp4", "udp4"} {
		for _, p := range paths {
			assertWhoami(t, network+" "+p.what, p.from, network, p.addr, p.want)
		}
	}

	for _, c := range []*pmContainer{c2, c1} {
		if err := e.del(c); err != nil {
			t.Fatal(err)
		}
	}
	assertRefused(t, "outside -> host uplink after DEL", e.host.Ext, "tcp4", hostPort(port))
	e.assertNoLeftovers(t, c1.ns, c2.ns)
}

// TestPortmapDualStack publishes a port of a dual-stack container over IPv4 and IPv6, and a
// port with an IPv4 hostIP, which must apply to IPv4 only: no error, no IPv6 mapping.
func TestPortmapDualStack(t *testing.T) {
	pmSubtests(t, "pmdual", 222, testPortmapDualStack)
}

func testPortmapDualStack(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmdual-"+backend, bridge, backend, x, true)
	addUplinkIPv6(t, e.host)
	const both, v4only = 8080, 8081
	c := e.mustAttach(t, "dual-1", tcpMap(both, 80),
		portMapping{HostPort: v4only, ContainerPort: 81, Protocol: "tcp", HostIP: harness.HostUplinkIP})
	if c.ip4 == "" || c.ip6 == "" {
		t.Fatalf("container got IPv4 %q and IPv6 %q, want both", c.ip4, c.ip6)
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		harness.StartWhoami(t, c.ns, network, 80)
		harness.StartWhoami(t, c.ns, network, 81)
	}
	host6 := func(p int) string { return net.JoinHostPort(hostUplinkIP6, strconv.Itoa(p)) }

	// A runtime's first client may come as soon as ADD returns. The host forwards the DNATed
	// packet to the container and must first resolve the container's address; the kernel sends
	// that neighbour solicitation from the bridge's link-local address, and sends none while
	// that address is still tentative, so bridge-lite creates the bridge without DAD.
	if tent := tentativeLinkLocal(t, e.host.NetNS, bridge); len(tent) > 0 {
		t.Errorf("the bridge's IPv6 link-local address is still tentative after ADD (%s): the first IPv6 "+
			"connections to a published port would stall for 1-2 s", strings.Join(tent, "; "))
	}
	assertWhoami(t, "IPv6 outside -> host:8080 right after ADD", e.host.Ext, "tcp6", host6(both), extUplinkIP6)
	assertWhoami(t, "IPv4 outside -> host:8080", e.host.Ext, "tcp4", hostPort(both), harness.ExtUplinkIP)
	assertWhoami(t, "IPv6 outside -> host:8080", e.host.Ext, "tcp6", host6(both), extUplinkIP6)
	assertWhoami(t, "IPv4 outside -> 10.97.0.1:8081", e.host.Ext, "tcp4", hostPort(v4only), harness.ExtUplinkIP)
	// The container listens on [::]:81, so only a missing mapping explains a refusal.
	assertRefused(t, "IPv6 outside -> host:8081 (hostIP is IPv4)", e.host.Ext, "tcp6", host6(v4only))
	// No kernel path takes ::1 to a container: the port is left alone, so that a client is
	// refused at once (and tries 127.0.0.1) instead of waiting for a timeout.
	start := time.Now()
	_, err := harness.AskWhoami(e.host.NetNS, "tcp6", net.JoinHostPort("::1", strconv.Itoa(both)))
	if took := time.Since(start); err == nil || !strings.Contains(err.Error(), "connection refused") || took > time.Second {
		t.Errorf("host -> [::1]:%d: err %v after %s, want a quick refusal", both, err, took.Round(time.Millisecond))
	}

	v4, v6 := e.published(t)
	if !publishesPort(v4, both) || !publishesPort(v4, v4only) {
		t.Errorf("IPv4 does not publish both %d and %d:\n%s", both, v4only, v4)
	}
	if !publishesPort(v6, both) || publishesPort(v6, v4only) {
		t.Errorf("IPv6 must publish %d and not %d:\n%s", both, v4only, v6)
	}
	if !containsAddr(v6, c.ip6) {
		t.Errorf("IPv6 mapping does not lead to the container's IPv6 address %s:\n%s", c.ip6, v6)
	}

	if err := e.del(c); err != nil {
		t.Fatal(err)
	}
	e.assertNoLeftovers(t, c.ns)
}

// tentativeLinkLocal lists the link-local IPv6 addresses of dev in n still doing (or failed)
// duplicate address detection.
func tentativeLinkLocal(t testing.TB, n *harness.NetNS, dev string) []string {
	t.Helper()
	out, err := n.Exec(t, "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link")
	if err != nil {
		t.Fatalf("listing link-local addresses of %s in %s: %v", dev, n.Name(), err)
	}
	var tent []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "tentative") || strings.Contains(l, "dadfailed") {
			tent = append(tent, strings.Join(strings.Fields(l)[1:4], " "))
		}
	}
	return tent
}

// TestPortmapRuntimeFlavours publishes mappings the way other runtimes spell them:
// containerd's CRI plugin with capitalised keys and an upper-case protocol, podman with a
// port range.
func TestPortmapRuntimeFlavours(t *testing.T) {
	pmSubtests(t, "pmflav", 243, testPortmapRuntimeFlavours)
}

func testPortmapRuntimeFlavours(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmflav-"+backend, bridge, backend, x, false)
	cns := e.host.NewContainer(t)
	att := harness.Attachment(cns, "flav-1", "eth0")
	att.CapabilityArgs = map[string]any{"portMappings": []map[string]any{
		{"HostPort": 8080, "ContainerPort": 80, "Protocol": "TCP", "HostIP": ""},
		{"hostPort": 9000, "containerPort": 7000, "protocol": "tcp", "range": 3},
	}}
	t.Cleanup(func() { _ = e.rt.Del(e.list, att) })
	if _, err := e.rt.Add(e.list, att); err != nil {
		t.Fatalf("ADD with CRI keys and a range: %v", err)
	}
	harness.StartWhoami(t, cns, "tcp4", 80)
	harness.StartWhoami(t, cns, "tcp4", 7002)
	harness.StartWhoami(t, cns, "tcp4", 7003)
	assertWhoami(t, "outside -> host:8080 (CRI keys)", e.host.Ext, "tcp4", hostPort(8080), harness.ExtUplinkIP)
	assertWhoami(t, "outside -> host:9002 (last port of the range)", e.host.Ext, "tcp4", hostPort(9002), harness.ExtUplinkIP)
	assertRefused(t, "outside -> host:9003 (past the range)", e.host.Ext, "tcp4", hostPort(9003))
	if v4, _ := e.published(t); !publishesPort(v4, 9000) || !publishesPort(v4, 9001) {
		t.Errorf("the range's first ports are not published:\n%s", v4)
	}
	if err := e.rt.Del(e.list, att); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	e.assertNoLeftovers(t, cns)
}

// TestPortmapDelNeedsNothing DELs portmap-lite directly with the bare minimum a runtime may send
// after a crash: no runtimeConfig, no prevResult, no netns, no backend, and a network name that
// changed since ADD. The mappings must go anyway (the record says what they were), only the
// DELed container's, and a second DEL must succeed.
func TestPortmapDelNeedsNothing(t *testing.T) {
	pmSubtests(t, "pmdel", 224, testPortmapDelNeedsNothing)
}

func testPortmapDelNeedsNothing(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmdel-"+backend, bridge, backend, x, false)
	c1 := e.mustAttach(t, "del-1", tcpMap(8080, 80), udpMap(5353, 53))
	c2 := e.mustAttach(t, "del-2", tcpMap(8081, 80))
	harness.StartWhoami(t, c1.ns, "tcp4", 80)
	harness.StartWhoami(t, c2.ns, "tcp4", 80)
	assertWhoami(t, "outside -> c1 before DEL", e.host.Ext, "tcp4", hostPort(8080), harness.ExtUplinkIP)

	// The conflist's name changed since ADD, too (a renamed network must not strand rules).
	minimal := e.net.portmapConf(t, "1.0.0", map[string]any{"name": "renamed-" + e.net.name})
	for i := range 2 {
		out := e.execPortmap(t, "DEL", c1.att.ContainerID, "", minimal)
		if out.Failed() {
			t.Fatalf("minimal DEL #%d failed:\n%s", i+1, out)
		}
	}
	if recs := e.records(t); !slices.Equal(recs, []string{"del-2:eth0"}) {
		t.Errorf("records after the minimal DEL of del-1: %v, want only del-2's", recs)
	}
	if dump := e.portmapDump(t); publishesPort(dump, 8080) || publishesPort(dump, 5353) || mentionsIPv4(dump, c1.ip4) {
		t.Errorf("c1's mappings survived the minimal DEL:\n%s", dump)
	}
	assertRefused(t, "outside -> c1 after the minimal DEL", e.host.Ext, "tcp4", hostPort(8080))
	assertWhoami(t, "outside -> c2 after c1's DEL", e.host.Ext, "tcp4", hostPort(8081), harness.ExtUplinkIP)

	// The last mapping goes the same way, taking the table or chains with it.
	for range 2 {
		if out := e.execPortmap(t, "DEL", c2.att.ContainerID, "", minimal); out.Failed() {
			t.Fatalf("minimal DEL of del-2 failed:\n%s", out)
		}
	}
	if tbl := e.portmapTable(t); tbl != "" {
		t.Errorf("table inet nsnet-portmap survived the last DEL:\n%s", tbl)
	}
	for _, c := range []*pmContainer{c1, c2} {
		if err := e.del(c); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNoLeftovers(t, c1.ns, c2.ns)
}

// TestPortmapConflicts: a host port already published to another container, or held by a
// listening socket of the host, fails ADD with an error naming the port and what holds it,
// leaves nothing of the refused attachment, and does not disturb the existing mapping.
func TestPortmapConflicts(t *testing.T) {
	pmSubtests(t, "pmconf", 228, testPortmapConflicts)
}

func testPortmapConflicts(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmconf-"+backend, bridge, backend, x, false)
	c1 := e.mustAttach(t, "conf-1", tcpMap(8080, 80))
	harness.StartWhoami(t, c1.ns, "tcp4", 80)

	c2ns := e.host.NewContainer(t)
	_, err := e.attach(t, c2ns, "conf-2", udpMap(5353, 53), tcpMap(8080, 80))
	if err == nil {
		t.Fatal("ADD of a second container publishing tcp 8080 succeeded")
	}
	t.Logf("conflicting ADD: %v", err)
	if merr := errorMentions(err, "8080", net.JoinHostPort(c1.ip4, "80")); merr != nil {
		t.Errorf("conflict error: %v", merr)
	}
	// The runtime cleans up a failed ADD with a DEL of the whole chain.
	if err := e.rt.Del(e.list, attachment(c2ns, "conf-2", nil)); err != nil {
		t.Errorf("DEL after the failed ADD: %v", err)
	}
	if recs := e.records(t); !slices.Equal(recs, []string{"conf-1:eth0"}) {
		t.Errorf("records after the refused ADD: %v, want only conf-1's", recs)
	}
	if v4, _ := e.published(t); publishesPort(v4, 5353) {
		t.Errorf("the refused ADD's other mapping (udp 5353) was published:\n%s", v4)
	}
	if dump := e.portmapDump(t); slices.ContainsFunc(hostAddrs(dump, x), func(a string) bool { return a != c1.ip4 }) {
		t.Errorf("port publishing mentions container addresses other than %s:\n%s", c1.ip4, dump)
	}
	assertWhoami(t, "outside -> the first container after the conflict", e.host.Ext, "tcp4", hostPort(8080), harness.ExtUplinkIP)

	// A host service listening on the port.
	const held = 9090
	srv := e.host.Command("socat", fmt.Sprintf("TCP4-LISTEN:%d,reuseaddr,fork", held), "SYSTEM:echo host")
	if err := srv.Start(); err != nil {
		t.Fatalf("starting socat in the host: %v", err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Kill()
		_ = srv.Wait()
	})
	waitListening(t, e.host.NetNS, "-tln", held)
	c3ns := e.host.NewContainer(t)
	_, err = e.attach(t, c3ns, "conf-3", tcpMap(held, 80))
	if err == nil {
		t.Fatalf("ADD publishing tcp %d succeeded although a host socket listens on it", held)
	}
	t.Logf("ADD over a listening socket: %v", err)
	if merr := errorMentions(err, strconv.Itoa(held), "in use"); merr != nil {
		t.Errorf("listening-socket error: %v", merr)
	}
	if err := e.rt.Del(e.list, attachment(c3ns, "conf-3", nil)); err != nil {
		t.Errorf("DEL after the failed ADD: %v", err)
	}
	if recs := e.records(t); !slices.Equal(recs, []string{"conf-1:eth0"}) {
		t.Errorf("records after the refused ADD: %v, want only conf-1's", recs)
	}
	if v4, _ := e.published(t); publishesPort(v4, held) {
		t.Errorf("port %d was published over the host's socket:\n%s", held, v4)
	}

	if err := e.del(c1); err != nil {
		t.Fatal(err)
	}
	e.assertNoLeftovers(t, c1.ns, c2ns, c3ns)
}

// hostAddrs returns the addresses of subnet 10.x.0.0/24 that text mentions, subnets left out.
func hostAddrs(text string, x int) []string {
	re := regexp.MustCompile(fmt.Sprintf(`\b10\.%d\.0\.\d+\b(/\d+)?`, x))
	var out []string
	for _, m := range re.FindAllString(text, -1) {
		if !strings.Contains(m, "/") {
			out = append(out, m)
		}
	}
	return out
}

// waitListening waits until something in n listens on port (ss flag -tln or -uln).
func waitListening(t testing.TB, n *harness.NetNS, flag string, port int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, err := n.Exec(t, "ss", "-H", flag, "sport = :"+strconv.Itoa(port))
		if err == nil && strings.TrimSpace(string(out)) != "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %d in %s after 5s", port, n.Name())
}

// TestPortmapUDPFlowSurvivesReplacement keeps a UDP "flow" (one client source port, a datagram
// every 100 ms) running while the container behind the host port is replaced. Conntrack would
// keep sending the flow to the old container, or to nowhere, unless DEL and ADD flush it.
func TestPortmapUDPFlowSurvivesReplacement(t *testing.T) {
	pmSubtests(t, "pmudp", 230, testPortmapUDPFlow)
}

func testPortmapUDPFlow(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmudp-"+backend, bridge, backend, x, false)
	const port = 5353
	client := net.JoinHostPort(harness.ExtUplinkIP, "40000")
	mapping := udpMap(port, port)

	// Another published port keeps the nat hooks registered throughout, as on any busy host.
	// (With nothing published, nftables drops its table, and a flow entry created while no nat
	// hook existed gets DNATed later on its own; with a hook, it is bound to "no NAT" for good.)
	keeper := e.mustAttach(t, "udp-keeper", tcpMap(9000, 80))
	aNS, bNS := e.host.NewContainer(t), e.host.NewContainer(t)
	sinkA, sinkB := startUDPSink(t, aNS, port), startUDPSink(t, bNS, port)
	a, err := e.attach(t, aNS, "udp-a", mapping)
	if err != nil {
		t.Fatal(err)
	}
	sender := startUDPSender(t, e.host.Ext, client, hostPort(port), 100*time.Millisecond)
	if _, ok := sinkA.waitFrom(client, 2*time.Second); !ok {
		t.Fatalf("container A received nothing from %s (sources seen: %v)", client, sinkA.sources())
	}
	conntrack := func() string {
		out, err := e.host.Exec(t, "conntrack", "-L", "-p", "udp", "--dport", strconv.Itoa(port))
		if err != nil {
			t.Fatalf("listing conntrack: %v", err)
		}
		return string(out)
	}
	if ct := conntrack(); !mentionsIPv4(ct, a.ip4) {
		t.Fatalf("conntrack has no entry towards A (%s) while the flow runs:\n%s", a.ip4, ct)
	}

	if err := e.del(a); err != nil {
		t.Fatal(err)
	}
	if ct := conntrack(); mentionsIPv4(ct, a.ip4) {
		t.Errorf("conntrack still sends the flow to A (%s) after A's DEL:\n%s", a.ip4, ct)
	}
	b, err := e.attach(t, bNS, "udp-b", mapping)
	if err != nil {
		t.Fatal(err)
	}
	if b.ip4 == a.ip4 {
		t.Fatalf("B got A's address %s, so a stale conntrack entry would not show", a.ip4)
	}
	if took, ok := sinkB.waitFrom(client, 2*time.Second); !ok {
		t.Errorf("container B received nothing from %s within 2s of its ADD (conntrack:\n%s)", client, conntrack())
	} else {
		t.Logf("B received the flow %s after its ADD", took.Round(time.Millisecond))
	}
	sender.Stop()

	for _, c := range []*pmContainer{b, keeper} {
		if err := e.del(c); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNoLeftovers(t, aNS, bNS, keeper.ns)
}

// TestPortmapMartian sends datagrams with source 127.0.0.1 from the outside to a published
// port. route_localnet is on towards the bridge, so only the martian filter stands between
// such packets and the container (CVE-2020-8558): the container must see nothing, and the
// filter's counter must show the drops.
func TestPortmapMartian(t *testing.T) {
	pmSubtests(t, "pmmart", 232, testPortmapMartian)
}

func testPortmapMartian(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmmart-"+backend, bridge, backend, x, false)
	const port = 7000
	cns := e.host.NewContainer(t)
	sink := startUDPSink(t, cns, port)
	c, err := e.attach(t, cns, "mart-1", udpMap(port, port))
	if err != nil {
		t.Fatal(err)
	}
	// The path works for an honest client.
	honest := net.JoinHostPort(harness.ExtUplinkIP, "41000")
	sendUDP(t, e.host.Ext, honest, hostPort(port), 1)
	if _, ok := sink.waitFrom(honest, 2*time.Second); !ok {
		t.Fatalf("the container received nothing from %s (sources: %v)", honest, sink.sources())
	}

	// The outside world rewrites its own packets of one source port to 127.0.0.1 (only in ext).
	for _, cmd := range []string{
		"add table ip nsntspoof",
		"add chain ip nsntspoof post { type nat hook postrouting priority srcnat ; }",
		fmt.Sprintf("add rule ip nsntspoof post ip daddr %s udp sport 41001 snat to 127.0.0.1", harness.HostUplinkIP),
	} {
		if _, err := e.host.Ext.Exec(t, "nft", cmd); err != nil {
			t.Fatalf("setting up the spoofing in the outside netns: %v", err)
		}
	}
	before, seen := e.martianDrops(t), sink.count()
	const spoofed = 5
	sendUDP(t, e.host.Ext, net.JoinHostPort(harness.ExtUplinkIP, "41001"), hostPort(port), spoofed)
	time.Sleep(300 * time.Millisecond)
	if got := sink.count() - seen; got != 0 {
		t.Errorf("the container received %d datagrams with a loopback source (sources: %v)", got, sink.sources())
	}
	if after := e.martianDrops(t); after-before < spoofed {
		t.Errorf("martian drop counter went from %d to %d, want +%d", before, after, spoofed)
	}

	if err := e.del(c); err != nil {
		t.Fatal(err)
	}
	e.assertNoLeftovers(t, cns)
}

// TestPortmapBadMappings feeds ADD invalid port mappings directly: each must fail with error
// code 7 and a message naming the problem, and publish or record nothing.
func TestPortmapBadMappings(t *testing.T) {
	for i, backend := range pmBackends {
		t.Run(backend, func(t *testing.T) {
			testPortmapBadMappings(t, backend, 241+i)
		})
	}
}

func testPortmapBadMappings(t *testing.T, backend string, x int) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	n := newPMNet(t, bins, "pmbad-"+backend, "pmbad-"+backend[:3], backend, fmt.Sprintf(`"subnet": "10.%d.0.0/24"`, x))
	e := newPMEnvFor(t, bins, n)
	c := e.host.NewContainer(t)
	prev := map[string]any{
		"cniVersion": "1.0.0",
		"interfaces": []map[string]any{{"name": "eth0", "sandbox": c.Path()}},
		"ips":        []map[string]any{{"interface": 0, "address": fmt.Sprintf("10.%d.0.2/24", x), "gateway": fmt.Sprintf("10.%d.0.1", x)}},
	}
	tests := []struct {
		name    string
		mapping map[string]any
		mention string
	}{
		{"host port 0", map[string]any{"hostPort": 0, "containerPort": 80}, "hostPort 0"},
		{"host port 70000", map[string]any{"hostPort": 70000, "containerPort": 80}, "70000"},
		{"container port 70000", map[string]any{"hostPort": 8080, "containerPort": 70000}, "70000"},
		{"protocol icmp", map[string]any{"hostPort": 8080, "containerPort": 80, "protocol": "icmp"}, "icmp"},
		{"hostIP 999.1.1.1", map[string]any{"hostPort": 8080, "containerPort": 80, "hostIP": "999.1.1.1"}, "999.1.1.1"},
		{"range past 65535", map[string]any{"hostPort": 65530, "containerPort": 8000, "range": 10}, "range 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A good mapping first: nothing of a batch may be published when one entry is bad.
			conf := n.portmapConf(t, "1.0.0", map[string]any{
				"backend":    backend,
				"prevResult": prev,
				"runtimeConfig": map[string]any{"portMappings": []map[string]any{
					{"hostPort": 8079, "containerPort": 80, "protocol": "tcp"}, tt.mapping,
				}},
			})
			out := e.execPortmap(t, "ADD", "bad-1", c.Path(), conf)
			requireCNIError(t, out, types.ErrInvalidNetworkConfig, tt.mention)
			if recs := e.records(t); len(recs) != 0 {
				t.Errorf("records left: %v", recs)
			}
			if tbl := e.portmapTable(t); tbl != "" {
				t.Errorf("table inet nsnet-portmap exists after the refused ADD:\n%s", tbl)
			}
			e.assertNoLeftovers(t, c)
		})
	}
}

// TestPortmapCheck: CHECK of the chain passes after ADD and fails, naming the port, once the
// mapping has been removed behind the plugin's back.
func TestPortmapCheck(t *testing.T) {
	pmSubtests(t, "pmchk", 235, testPortmapCheck)
}

func testPortmapCheck(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmchk-"+backend, bridge, backend, x, false)
	c := e.mustAttach(t, "chk-1", tcpMap(8080, 80), udpMap(8080, 80))
	if err := e.rt.Check(e.list, c.att); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	if backend == "nftables" {
		if _, err := e.host.Exec(t, "nft", "delete element inet nsnet-portmap pm4 { tcp . 8080 }"); err != nil {
			t.Fatalf("removing the map element by hand: %v", err)
		}
	} else {
		deleteIptRule(t, e.host, "NSNET-HOSTPORTS", "-p tcp -m tcp --dport 8080 ")
	}
	err := e.rt.Check(e.list, c.att)
	if err == nil {
		t.Fatal("CHECK passed although tcp 8080 is no longer published")
	}
	t.Logf("CHECK after the hand removal: %v", err)
	if merr := errorMentions(err, "8080", "not published"); merr != nil {
		t.Errorf("CHECK error: %v", merr)
	}
	if err := e.del(c); err != nil {
		t.Fatal(err)
	}
	e.assertNoLeftovers(t, c.ns)
}

// deleteIptRule deletes, by number, the first rule of nat chain that contains match.
func deleteIptRule(t testing.TB, host *harness.Host, chain, match string) {
	t.Helper()
	out, err := host.Exec(t, "iptables", "-t", "nat", "-S", chain)
	if err != nil {
		t.Fatalf("listing nat %s: %v", chain, err)
	}
	num := 0
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "-A "+chain+" ") {
			continue
		}
		num++
		if strings.Contains(l, match) {
			if _, err := host.Exec(t, "iptables", "-t", "nat", "-D", chain, strconv.Itoa(num)); err != nil {
				t.Fatalf("deleting rule %d of nat %s: %v", num, chain, err)
			}
			return
		}
	}
	t.Fatalf("no rule matching %q in nat %s:\n%s", match, chain, out)
}

// TestPortmapGC runs portmap-lite STATUS and GC (CNI 1.1.0) directly: STATUS succeeds, and GC
// withdraws exactly the mappings of attachments missing from cni.dev/valid-attachments, and
// nothing without that key.
func TestPortmapGC(t *testing.T) {
	pmSubtests(t, "pmgc", 237, testPortmapGC)
}

func testPortmapGC(t *testing.T, backend, bridge string, x int) {
	e := newPMEnv(t, "pmgc-"+backend, bridge, backend, x, false)
	keep := e.mustAttach(t, "gc-keep", tcpMap(8080, 80))
	stale := e.mustAttach(t, "gc-stale", tcpMap(8081, 80))
	harness.StartWhoami(t, keep.ns, "tcp4", 80)
	harness.StartWhoami(t, stale.ns, "tcp4", 80)

	gc := func(extra map[string]any) {
		t.Helper()
		if out := e.execPortmap(t, "GC", "", "", e.net.portmapConf(t, "1.1.0", extra)); out.Failed() {
			t.Fatalf("GC failed:\n%s", out)
		}
	}
	if out := e.execPortmap(t, "STATUS", "", "", e.net.portmapConf(t, "1.1.0", map[string]any{"backend": backend})); out.Failed() {
		t.Errorf("STATUS failed:\n%s", out)
	}
	// Without the key stale and live look alike: nothing goes.
	gc(nil)
	if recs := e.records(t); len(recs) != 2 {
		t.Errorf("GC without valid-attachments left records %v, want both", recs)
	}
	gc(map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": "gc-keep", "ifname": "eth0"}}})
	if recs := e.records(t); !slices.Equal(recs, []string{"gc-keep:eth0"}) {
		t.Errorf("records after GC: %v, want only gc-keep's", recs)
	}
	if dump := e.portmapDump(t); publishesPort(dump, 8081) || mentionsIPv4(dump, stale.ip4) {
		t.Errorf("the stale attachment's mapping survived GC:\n%s", dump)
	}
	assertRefused(t, "outside -> stale container after GC", e.host.Ext, "tcp4", hostPort(8081))
	assertWhoami(t, "outside -> kept container after GC", e.host.Ext, "tcp4", hostPort(8080), harness.ExtUplinkIP)

	for _, c := range []*pmContainer{keep, stale} {
		if err := e.del(c); err != nil {
			t.Fatal(err)
		}
	}
	e.assertNoLeftovers(t, keep.ns, stale.ns)
}

// TestPortmapAfterReferenceBridge chains portmap-lite after the reference bridge and host-local
// plugins: it must find the container address in their result, publish the port, and DEL clean.
func TestPortmapAfterReferenceBridge(t *testing.T) {
	for i, backend := range pmBackends {
		t.Run(backend, func(t *testing.T) {
			harness.RequireRoot(t)
			bins := harness.Build(t)
			bins.Require(t, "bridge")
			bins.Require(t, "host-local")
			x := 239 + i
			n := newPMNet(t, bins, "pmref-"+backend, "pmref-"+backend[:3], backend, fmt.Sprintf(`"subnet": "10.%d.0.0/24"`, x))
			n.reference = true
			e := newPMEnvFor(t, bins, n)
			c := e.mustAttach(t, "ref-1", tcpMap(8080, 80))
			harness.StartWhoami(t, c.ns, "tcp4", 80)
			assertWhoami(t, "outside -> host:8080", e.host.Ext, "tcp4", hostPort(8080), harness.ExtUplinkIP)
			if err := e.del(c); err != nil {
				t.Fatal(err)
			}
			left, err := harness.FindLeftovers(e.host, n.leftoverOptions(c.ns))
			if err != nil {
				t.Fatalf("inspecting host: %v", err)
			}
			// The reference bridge keeps its nftables masquerade table and base chains after its
			// last DEL, by design; they are not portmap-lite's.
			left.Nft = slices.DeleteFunc(left.Nft, func(l string) bool {
				return strings.HasPrefix(l, "table inet cni_plugins_masquerade")
			})
			if !left.Empty() {
				t.Errorf("leftovers after DEL of the chain:\n%s", left)
			}
		})
	}
}
