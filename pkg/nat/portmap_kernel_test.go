package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func newPM(tb testing.TB, backend string) PortMapper {
	tb.Helper()
	assertNotStartNS(tb)
	p, err := NewPortMapper(backend)
	if err != nil {
		tb.Fatalf("NewPortMapper(%q): %v", backend, err)
	}
	if p.Backend() != backend {
		tb.Fatalf("Backend() = %q, want %q", p.Backend(), backend)
	}
	return p
}

func pmAdd(tb testing.TB, p PortMapper, ms ...PortMapping) {
	tb.Helper()
	assertNotStartNS(tb)
	if err := p.Add(ms); err != nil {
		tb.Fatalf("Add: %v", err)
	}
}

func pmDel(tb testing.TB, p PortMapper, ms ...PortMapping) {
	tb.Helper()
	assertNotStartNS(tb)
	if err := p.Del(ms); err != nil {
		tb.Fatalf("Del: %v", err)
	}
}

func pmCheckOK(tb testing.TB, p PortMapper, ms ...PortMapping) {
	tb.Helper()
	assertNotStartNS(tb)
	if err := p.Check(ms); err != nil {
		tb.Errorf("Check: %v", err)
	}
}

func pmCheckFails(tb testing.TB, p PortMapper, ms []PortMapping, contains ...string) {
	tb.Helper()
	assertNotStartNS(tb)
	err := p.Check(ms)
	if err == nil {
		tb.Errorf("Check = nil, want an error")
		return
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			tb.Errorf("Check = %q, want it to mention %q", err, s)
		}
	}
}

func describeWithSubnet(m PortMapping) string {
	return fmt.Sprintf("%s (%v)", describeMapping(m), m.ContainerSubnet)
}

// pmWantList compares List with the wanted mappings, in List's order.
func pmWantList(tb testing.TB, p PortMapper, want ...PortMapping) {
	tb.Helper()
	assertNotStartNS(tb)
	got, err := p.List()
	if err != nil {
		tb.Fatalf("List: %v", err)
	}
	var gs, ws []string
	for _, m := range got {
		gs = append(gs, describeWithSubnet(m))
	}
	var es []pmEntry
	for _, m := range want {
		e := mustEntry(tb, m)
		es = append(es, e)
	}
	for _, m := range sortMappings(es) {
		ws = append(ws, describeWithSubnet(m))
	}
	if !slices.Equal(gs, ws) {
		tb.Errorf("List:\n  %s\nwant\n  %s", strings.Join(gs, "\n  "), strings.Join(ws, "\n  "))
	}
}

// The change log and packet counters differ between otherwise equal rule sets.
var pmRulesetNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]|counter packets \d+ bytes \d+|(map gen \{[^}]*?)\s*elements = \{[^}]*\}`)

// pmRuleset returns everything netfilter holds in the current netns, as nft, iptables-save and
// ip6tables-save show it.
func pmRuleset(tb testing.TB) string {
	tb.Helper()
	out := run(tb, "nft", "list", "ruleset") + run(tb, "iptables-save") + run(tb, "ip6tables-save")
	return pmRulesetNoise.ReplaceAllString(out, "$1")
}

func pmNothingLeft(tb testing.TB) {
	tb.Helper()
	if rs := pmRuleset(tb); strings.Contains(strings.ToLower(rs), "nsnet") {
		tb.Errorf("nsnet objects left behind:\n%s", rs)
	}
	c, err := nftables.New()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.ListTableOfFamily(pmTableName, nftables.TableFamilyINet); !errors.Is(err, unix.ENOENT) {
		tb.Errorf("table inet %s: lookup error %v, want ENOENT", pmTableName, err)
	}
}

func TestPortmapLifecycle(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(netns.NsHandle) { testPortmapLifecycle(t, backend) })
		})
	}
}

func testPortmapLifecycle(t *testing.T, backend string) {
	p := newPM(t, backend)
	a := []PortMapping{
		pmap(t, "tcp", "", 8080, "10.88.0.7/16", 80),
		pmap(t, "udp", "", 8080, "10.88.0.7/16", 80),
		pmap(t, "tcp", "10.99.0.1", 9090, "10.88.0.7/16", 90),
		pmap(t, "tcp", "", 8080, "fd00:88::7/64", 80),
		pmap(t, "sctp", "fd00:99::1", 8080, "fd00:88::7/64", 80),
	}
	b := []PortMapping{pmap(t, "tcp", "", 8081, "10.88.0.8/16", 80)}

	pmWantList(t, p)
	pmCheckFails(t, p, a, "not published")
	if err := p.Check(nil); err != nil {
		t.Errorf("Check(nil) = %v", err)
	}

	pmAdd(t, p, a...)
	pmAdd(t, p, b...)
	pmCheckOK(t, p, a...)
	pmCheckOK(t, p, b...)
	pmWantList(t, p, append(slices.Clone(a), b...)...)

	before := pmRuleset(t)
	t.Logf("rule set with 6 mappings:\n%s", before)
	pmAdd(t, p, a...)
	pmAdd(t, p, a[2], a[0])
	if after := pmRuleset(t); after != before {
		t.Errorf("a second Add changed the rules:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A key published to another target: nothing of the batch happens.
	fresh := pmap(t, "tcp", "", 7070, "10.88.0.9/16", 70)
	clash := pmap(t, "tcp", "0.0.0.0", 8080, "10.88.0.9/16", 80)
	err := p.Add([]PortMapping{fresh, clash})
	var ce *ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("Add of a taken port = %v, want a *ConflictError", err)
	}
	if ce.Existing != "10.88.0.7:80" || !slices.Equal(ce.Mapping.ContainerIP, clash.ContainerIP) || ce.Mapping.HostPort != 8080 {
		t.Errorf("ConflictError = %+v (%v), want the clashing mapping and 10.88.0.7:80", *ce, ce)
	}
	if after := pmRuleset(t); after != before {
		t.Errorf("a failed Add changed the rules:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	pmCheckFails(t, p, []PortMapping{fresh}, "tcp 0.0.0.0:7070 is not published")
	pmCheckOK(t, p, a...)
	pmWantList(t, p, append(slices.Clone(a), b...)...)
	// The same in IPv6, and through the host-address map.
	for _, m := range []PortMapping{pmap(t, "tcp", "", 8080, "fd00:88::9/64", 80), pmap(t, "tcp", "10.99.0.1", 9090, "10.88.0.7/16", 91)} {
		if err := p.Add([]PortMapping{m}); !errors.As(err, &ce) {
			t.Errorf("Add(%s) = %v, want a *ConflictError", describeMapping(m), err)
		}
	}
	// Other keys sharing the port are no conflict: another protocol, another host address.
	other := []PortMapping{pmap(t, "udp", "", 8081, "10.88.0.9/16", 81), pmap(t, "tcp", "10.99.0.2", 9090, "10.88.0.9/16", 90)}
	pmAdd(t, p, other...)
	pmCheckOK(t, p, other...)

	// The container at 10.88.0.7 is replaced on 8080/tcp; the late Del of the old one keeps the successor.
	pmDel(t, p, a[0])
	successor := pmap(t, "tcp", "", 8080, "10.88.0.9/16", 80)
	pmAdd(t, p, successor)
	pmDel(t, p, a...)
	pmCheckOK(t, p, successor)
	pmCheckOK(t, p, other...)
	pmCheckOK(t, p, b...)
	pmCheckFails(t, p, a[1:2], "udp 0.0.0.0:8080 is not published")
	pmWantList(t, p, successor, other[0], other[1], b[0])
	pmDel(t, p, a...) // missing ones are no error

	// A Del naming the right key but another target leaves the mapping alone.
	wrong := pmap(t, "tcp", "", 8081, "10.88.0.99/16", 80)
	pmDel(t, p, wrong)
	pmCheckOK(t, p, b...)

	// A container address that comes back with another subnet takes its new hairpin range.
	moved := pmap(t, "tcp", "", 8082, "10.88.0.8/24", 80)
	pmAdd(t, p, moved)
	pmCheckOK(t, p, moved)
	pmCheckFails(t, p, b, "hairpin")
	pmWantList(t, p, successor, other[0], other[1], pmap(t, "tcp", "", 8081, "10.88.0.8/24", 80), moved)

	pmDel(t, p, successor, moved)
	pmDel(t, p, other...)
	pmDel(t, p, b...)
	pmNothingLeft(t)
	pmWantList(t, p)
	pmDel(t, p, b...)
	pmDel(t, p)

	// An invalid batch changes nothing, even on an empty netns.
	if err := p.Add([]PortMapping{fresh, pmap(t, "tcp", "", 0, "10.88.0.9/16", 80)}); err == nil {
		t.Error("Add with an invalid mapping succeeded")
	}
	pmNothingLeft(t)
}

// TestPortmapRepair damages the rules by hand: Check says what is missing, Add puts it back.
func TestPortmapRepair(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(netns.NsHandle) {
				p := newPM(t, backend)
				ms := []PortMapping{pmap(t, "tcp", "", 8080, "10.88.0.7/16", 80), pmap(t, "tcp", "", 8080, "fd00:88::7/64", 80)}
				pmAdd(t, p, ms...)
				want := pmRuleset(t)
				switch backend {
				case BackendNftables:
					run(t, "nft", "flush", "chain", "inet", pmTableName, pmChainPorts)
					run(t, "nft", "delete", "element", "inet", pmTableName, "hp4", "{ 10.88.0.7 . 10.88.0.0/16 }")
					pmCheckFails(t, p, ms, "chain hostports holds rules", "hairpin set hp4 lacks 10.88.0.7 . 10.88.0.0/16")
					run(t, "nft", "delete", "chain", "inet", pmTableName, pmChainMartian)
					pmCheckFails(t, p, ms, "chain martian is missing")
				case BackendIptables:
					run(t, "iptables", "-t", "nat", "-D", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "nsnet hostports", "-j", iptPMChain)
					run(t, "ip6tables", "-t", "nat", "-F", iptPMMasqChain)
					pmCheckFails(t, p, ms, "jump from nat OUTPUT", "no hairpin rule -s fd00:88::/64")
					run(t, "iptables", "-t", "raw", "-F", iptMartianChain)
					pmCheckFails(t, p, ms, `lacks "nsnet-pm martian saddr"`)
				}
				pmAdd(t, p, ms...)
				pmCheckOK(t, p, ms...)
				if got := pmRuleset(t); got != want {
					t.Errorf("after repair:\n%s\nwant\n%s", got, want)
				}
				pmDel(t, p, ms...)
				pmNothingLeft(t)
			})
		})
	}
}

// nftPMRuleCount counts the rules of the nftables table.
func nftPMRuleCount(tb testing.TB) int {
	tb.Helper()
	c, err := nftables.New()
	if err != nil {
		tb.Fatal(err)
	}
	st, err := readPMNft(c, pmReadRules)
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, rs := range st.rules {
		n += len(rs)
	}
	return n
}

// benchMapping is the i-th of many containers, each with one mapping.
func benchMapping(tb testing.TB, i int) PortMapping {
	return pmap(tb, "tcp", "", 10000+i, fmt.Sprintf("10.60.%d.%d/16", i/250, i%250+2), 80)
}

// TestNftPortmapScale checks that the nftables rule count does not grow with the mappings.
func TestNftPortmapScale(t *testing.T) {
	inThrowawayNS(t, func(netns.NsHandle) {
		p := newPM(t, BackendNftables)
		pmAdd(t, p, benchMapping(t, 0))
		rules := nftPMRuleCount(t)
		if rules != 14 {
			t.Errorf("%d rules with one mapping, want 14", rules)
		}
		const n = 300
		ms := make([]PortMapping, n)
		add := make([]time.Duration, n)
		for i := range ms {
			ms[i] = benchMapping(t, i)
			start := time.Now()
			pmAdd(t, p, ms[i])
			add[i] = time.Since(start)
		}
		if got := nftPMRuleCount(t); got != rules {
			t.Errorf("%d rules with %d mappings, want %d", got, n, rules)
		}
		got, err := p.List()
		if err != nil || len(got) != n {
			t.Fatalf("List: %d mappings, %v; want %d", len(got), err, n)
		}
		pmCheckOK(t, p, ms...)
		del := make([]time.Duration, n)
		for i := range ms {
			start := time.Now()
			pmDel(t, p, ms[i])
			del[i] = time.Since(start)
		}
		avg := func(ds []time.Duration) time.Duration {
			var sum time.Duration
			for _, d := range ds {
				sum += d
			}
			return sum / time.Duration(len(ds))
		}
		t.Logf("Add avg %v for the first 20, %v for the last 20; Del avg %v for the first 20, %v for the last 20",
			avg(add[:20]), avg(add[n-20:]), avg(del[:20]), avg(del[n-20:]))
		pmNothingLeft(t)
	})
}

// TestNftPortmapConcurrent lets several processes' worth of Adds and Dels race in one netns:
// the change counter makes every batch that read stale state fail and start over.
func TestNftPortmapConcurrent(t *testing.T) {
	inThrowawayNS(t, func(ns netns.NsHandle) {
		p := newPM(t, BackendNftables)
		const workers, each = 6, 5
		var ms [workers][]PortMapping
		for w := range workers {
			for i := range each {
				ip := fmt.Sprintf("10.77.%d.%d/16", w, i+2)
				ms[w] = append(ms[w], pmap(t, "tcp", "", 20000+w*100+i, ip, 80), pmap(t, "udp", "", 20000+w*100+i, ip, 80))
			}
		}
		parallel := func(op func(PortMapper, []PortMapping) error) {
			t.Helper()
			raceIn(t, ns, workers, func(w int) error {
				for i := 0; i < len(ms[w]); i += 2 {
					if err := op(p, ms[w][i:i+2]); err != nil {
						return err
					}
				}
				return nil
			})
		}
		parallel(PortMapper.Add)
		for w := range workers {
			pmCheckOK(t, p, ms[w]...)
		}
		if got, err := p.List(); err != nil || len(got) != workers*each*2 {
			t.Errorf("List: %d mappings, %v; want %d", len(got), err, workers*each*2)
		}
		if n := nftPMRuleCount(t); n != 14 {
			t.Errorf("%d rules after racing Adds, want 14", n)
		}
		parallel(PortMapper.Del)
		pmNothingLeft(t)
	})
}

// Port publishing with real packets. The host netns (the test thread's) has a bridge br0
// (10.210.0.1/24, fd00:210::1/64) with containers c1 (.2, ::2) and c2 (.3, ::3) and an uplink
// up0 (10.211.0.1/24, fd00:211::1/64) to ext (.2, ::2), which routes 10.210.0.0/24 through
// the host. Each container runs a server on port
// 80 (TCP and UDP) that answers "<name> <client address as seen>".

const (
	pmBr4, pmBr6   = "10.210.0.1", "fd00:210::1"
	pmC14, pmC16   = "10.210.0.2", "fd00:210::2"
	pmC24, pmC26   = "10.210.0.3", "fd00:210::3"
	pmUp4, pmUp6   = "10.211.0.1", "fd00:211::1"
	pmExt4, pmExt6 = "10.211.0.2", "fd00:211::2"
)

type pmTopo struct {
	host, c1, c2, ext netns.NsHandle
}

func wirePortmap(tb testing.TB, host netns.NsHandle) pmTopo {
	tb.Helper()
	assertNotStartNS(tb)
	topo := pmTopo{host: host, c1: newSideNS(tb), c2: newSideNS(tb), ext: newSideNS(tb)}
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		tb.Fatalf("creating br0: %v", err)
	}
	if err := addrsUp("br0", []string{pmBr4 + "/24", pmBr6 + "/64"}); err != nil {
		tb.Fatal(err)
	}
	br, err := netlink.LinkByName("br0")
	if err != nil {
		tb.Fatal(err)
	}
	for i, ns := range []netns.NsHandle{topo.c1, topo.c2} {
		name := fmt.Sprintf("hv%d", i+1)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
		if err := netlink.LinkAdd(veth); err != nil {
			tb.Fatalf("creating %s: %v", name, err)
		}
		if err := addrsUp(name, nil); err != nil {
			tb.Fatal(err)
		}
		// As the bridge plugin sets it: with br_netfilter loaded, a container reaching itself
		// through a published port is DNATed on the bridge and sent back out of its own port.
		if err := netlink.LinkSetHairpin(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}}, true); err != nil {
			tb.Fatalf("hairpin mode on %s: %v", name, err)
		}
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1", PeerNamespace: netlink.NsFd(int(topo.ext))}
	if err := netlink.LinkAdd(veth); err != nil {
		tb.Fatalf("creating up0: %v", err)
	}
	if err := addrsUp("up0", []string{pmUp4 + "/24", pmUp6 + "/64"}); err != nil {
		tb.Fatal(err)
	}
	if err := addrsUp("lo", nil); err != nil {
		tb.Fatal(err)
	}
	// /proc/sys/net shows the netns of the thread that opens it. route_localnet is what the
	// plugin sets for 127.0.0.1:hostPort.
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding", "/proc/sys/net/ipv4/conf/br0/route_localnet"} {
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			tb.Fatalf("writing %s: %v", f, err)
		}
	}
	for _, c := range []struct {
		ns     netns.NsHandle
		v4, v6 string
	}{{topo.c1, pmC14, pmC16}, {topo.c2, pmC24, pmC26}} {
		doIn(tb, c.ns, func() error {
			if err := addrsUp("lo", nil); err != nil {
				return err
			}
			return wireSide("eth0", []string{c.v4 + "/24", c.v6 + "/64"}, [][2]string{{"", pmBr4}, {"", pmBr6}})
		})
	}
	doIn(tb, topo.ext, func() error {
		if err := addrsUp("lo", nil); err != nil {
			return err
		}
		return wireSide("up1", []string{pmExt4 + "/24", pmExt6 + "/64"}, [][2]string{{"10.210.0.0/24", pmUp4}})
	})
	return topo
}

// serveWhoami runs the container's TCP and UDP servers on port 80 of both families (one
// socket per family: Go probes for dual-stack sockets once per process, in whatever netns
// it is in then). The sockets are made in the container's netns; serving them needs no namespace.
func serveWhoami(tb testing.TB, ns netns.NsHandle, name string) {
	tb.Helper()
	var lns []net.Listener
	var pcs []net.PacketConn
	doIn(tb, ns, func() error {
		for _, fam := range []string{"4", "6"} {
			ln, err := net.Listen("tcp"+fam, ":80")
			if err != nil {
				return err
			}
			lns = append(lns, ln)
			pc, err := net.ListenPacket("udp"+fam, ":80")
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	for _, ln := range lns {
		tb.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %s", name, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
				c.Close()
			}
		}()
	}
	for _, pc := range pcs {
		tb.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 64)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(fmt.Appendf(nil, "%s %s", name, from.(*net.UDPAddr).AddrPort().Addr().Unmap()), from)
			}
		}()
	}
}

// ask connects from ns to addr and returns the server's answer.
func ask(ns netns.NsHandle, network, addr string, timeout time.Duration) (string, error) {
	var answer string
	err := runIn(ns, func() error {
		c, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if strings.HasPrefix(network, "udp") {
			if _, err := c.Write([]byte("who")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			answer = string(buf[:n])
			return err
		}
		b, err := io.ReadAll(c)
		answer = string(b)
		return err
	})
	return answer, err
}

// wantAnswer retries a little: a fresh bridge port and IPv6 neighbour discovery take a moment.
func wantAnswer(tb testing.TB, what string, ns netns.NsHandle, network, addr, want string) {
	tb.Helper()
	var got string
	var err error
	for range 3 {
		if got, err = ask(ns, network, addr, 2*time.Second); err == nil {
			break
		}
	}
	switch {
	case err != nil:
		tb.Errorf("%s: %s %s: %v", what, network, addr, err)
	case got != want:
		tb.Errorf("%s: %s %s answered %q, want %q", what, network, addr, got, want)
	}
}

func wantNoAnswer(tb testing.TB, what string, ns netns.NsHandle, network, addr string) {
	tb.Helper()
	if got, err := ask(ns, network, addr, time.Second); err == nil {
		tb.Errorf("%s: %s %s answered %q, want no connection", what, network, addr, got)
	}
}

func TestPortmapPackets(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(host netns.NsHandle) { testPortmapPackets(t, backend, host) })
		})
	}
}

func testPortmapPackets(t *testing.T, backend string, host netns.NsHandle) {
	topo := wirePortmap(t, host)
	serveWhoami(t, topo.c1, "c1")
	serveWhoami(t, topo.c2, "c2")
	p := newPM(t, backend)
	up4 := net.JoinHostPort(pmUp4, "8080")
	up6 := net.JoinHostPort(pmUp6, "8080")

	wantAnswer(t, "c1 directly", topo.c2, "tcp4", net.JoinHostPort(pmC14, "80"), "c1 "+pmC24)
	wantNoAnswer(t, "before Add", topo.ext, "tcp4", up4)

	c1 := []PortMapping{
		pmap(t, "tcp", "", 8080, pmC14+"/24", 80),
		pmap(t, "udp", "", 8080, pmC14+"/24", 80),
		pmap(t, "tcp", "", 8080, pmC16+"/64", 80),
		pmap(t, "udp", "", 8080, pmC16+"/64", 80),
	}
	c2 := []PortMapping{pmap(t, "tcp", pmUp4, 8082, pmC24+"/24", 80)}
	pmAdd(t, p, c1...)
	pmAdd(t, p, c2...)

	wantAnswer(t, "from ext, no SNAT", topo.ext, "tcp4", up4, "c1 "+pmExt4)
	wantAnswer(t, "UDP from ext", topo.ext, "udp4", up4, "c1 "+pmExt4)
	wantAnswer(t, "IPv6 from ext", topo.ext, "tcp6", up6, "c1 "+pmExt6)
	wantAnswer(t, "UDP over IPv6 from ext", topo.ext, "udp6", up6, "c1 "+pmExt6)
	wantAnswer(t, "from the host to its uplink address", topo.host, "tcp4", up4, "c1 "+pmUp4)
	wantAnswer(t, "from the host to its bridge address", topo.host, "tcp4", net.JoinHostPort(pmBr4, "8080"), "c1 "+pmBr4)
	wantAnswer(t, "from 127.0.0.1 on the host", topo.host, "tcp4", "127.0.0.1:8080", "c1 "+pmBr4)
	// No kernel path takes ::1 to a container: the host refuses at once, and a client tries 127.0.0.1 next.
	if _, err := ask(topo.host, "tcp6", "[::1]:8080", time.Second); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("from ::1 on the host: %v, want connection refused", err)
	}
	wantAnswer(t, "from the host to its IPv6 uplink address", topo.host, "tcp6", up6, "c1 "+pmUp6)
	wantAnswer(t, "hairpin from c2", topo.c2, "tcp4", up4, "c1 "+pmBr4)
	wantAnswer(t, "hairpin from c2 via the bridge address", topo.c2, "tcp4", net.JoinHostPort(pmBr4, "8080"), "c1 "+pmBr4)
	wantAnswer(t, "UDP hairpin from c2", topo.c2, "udp4", up4, "c1 "+pmBr4)
	wantAnswer(t, "IPv6 hairpin from c2", topo.c2, "tcp6", up6, "c1 "+pmBr6)
	wantAnswer(t, "c1 to itself", topo.c1, "tcp4", up4, "c1 "+pmBr4)
	wantAnswer(t, "c1 to itself over IPv6", topo.c1, "tcp6", up6, "c1 "+pmBr6)

	// c2's port is published on the uplink address only.
	wantAnswer(t, "host IP mapping from ext", topo.ext, "tcp4", net.JoinHostPort(pmUp4, "8082"), "c2 "+pmExt4)
	wantNoAnswer(t, "host IP mapping via another address", topo.host, "tcp4", net.JoinHostPort(pmBr4, "8082"))
	wantNoAnswer(t, "host IP mapping via another address", topo.c1, "tcp4", net.JoinHostPort(pmBr4, "8082"))
	// Only traffic to a local address is published: traffic the host forwards to c2's own port 8080 is not touched.
	wantNoAnswer(t, "forwarded traffic", topo.ext, "tcp4", net.JoinHostPort(pmC24, "8080"))
	wantAnswer(t, "forwarded traffic", topo.ext, "tcp4", net.JoinHostPort(pmC24, "80"), "c2 "+pmExt4)

	pmDel(t, p, c1...)
	wantNoAnswer(t, "after Del", topo.ext, "tcp4", up4)
	wantNoAnswer(t, "after Del", topo.ext, "tcp6", up6)
	wantAnswer(t, "the other container after Del", topo.ext, "tcp4", net.JoinHostPort(pmUp4, "8082"), "c2 "+pmExt4)
	pmDel(t, p, c2...)
	wantNoAnswer(t, "after the last Del", topo.ext, "tcp4", net.JoinHostPort(pmUp4, "8082"))
	pmNothingLeft(t)
}

// martianDrops reads the packet counter of the drop rule for IPv4 loopback sources (daddr false)
// or destinations (daddr true).
func martianDrops(tb testing.TB, backend string, daddr bool) uint64 {
	tb.Helper()
	assertNotStartNS(tb)
	dir := "saddr"
	if daddr {
		dir = "daddr"
	}
	if backend == BackendNftables {
		c, err := nftables.New()
		if err != nil {
			tb.Fatal(err)
		}
		t := pmTable()
		rules, err := c.GetRules(t, &nftables.Chain{Name: pmChainMartian, Table: t})
		if err != nil {
			tb.Fatal(err)
		}
		for _, r := range rules {
			if c, _ := userdata.GetString(r.UserData, userdata.TypeComment); c != pmRulePrefix+"martian4-"+dir {
				continue
			}
			for _, e := range r.Exprs {
				if cnt, ok := e.(*expr.Counter); ok {
					return cnt.Packets
				}
			}
		}
		tb.Fatalf("no counter on the martian4-%s rule", dir)
	}
	h, err := newIptHandles()
	if err != nil {
		tb.Fatal(err)
	}
	lines, err := h.v4.ListWithCounters(iptRawTable, iptMartianChain)
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range lines {
		words := splitIptLine(line)
		i := slices.Index(words, "-c")
		if !strings.Contains(line, "martian "+dir) || i < 0 || i+1 >= len(words) {
			continue
		}
		n, err := strconv.ParseUint(words[i+1], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		return n
	}
	tb.Fatalf("no martian %s rule in %q", dir, lines)
	return 0
}

func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ipv4Packet builds an IPv4 packet around an upper-layer segment; a TCP segment gets its checksum.
func ipv4Packet(src, dst netip.Addr, proto byte, l4 []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
	h[8], h[9] = 64, proto
	copy(h[12:], src.AsSlice())
	copy(h[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(h[10:], ipChecksum(h))
	if proto == unix.IPPROTO_TCP {
		pseudo := slices.Concat(src.AsSlice(), dst.AsSlice(), []byte{0, proto}, binary.BigEndian.AppendUint16(nil, uint16(len(l4))), l4)
		binary.BigEndian.PutUint16(l4[16:], ipChecksum(pseudo))
	}
	return append(h, l4...)
}

func tcpSYN(sport, dport uint16) []byte {
	s := make([]byte, 20)
	binary.BigEndian.PutUint16(s[0:], sport)
	binary.BigEndian.PutUint16(s[2:], dport)
	binary.BigEndian.PutUint32(s[4:], 1)
	s[12], s[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(s[14:], 65535)
	return s
}

func udpDatagram(sport, dport uint16, payload []byte) []byte {
	u := make([]byte, 8)
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	return append(u, payload...) // checksum 0: none, allowed over IPv4
}

// sendSpoofedSYN sends, from the calling thread's netns, a TCP SYN with source 127.0.0.1 to
// dst: the routing of the sender does not look at a raw packet's source.
func sendSpoofedSYN(dst netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	pkt := ipv4Packet(netip.MustParseAddr("127.0.0.1"), dst.Addr(), unix.IPPROTO_TCP, tcpSYN(40000, dst.Port()))
	return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst.Addr().As4()})
}

// sendFrameToLoopback sends, from the calling thread's netns, an Ethernet frame out of ifname
// to the MAC gw carrying a UDP datagram for 127.0.0.1:port: what a neighbour on the bridge can
// do to reach the host's loopback services once route_localnet is on (CVE-2020-8558).
func sendFrameToLoopback(ifname string, gw net.HardwareAddr, src netip.Addr, port uint16) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	proto := uint16(unix.ETH_P_IP)
	htons := proto<<8 | proto>>8
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	ip := ipv4Packet(src, netip.MustParseAddr("127.0.0.1"), unix.IPPROTO_UDP, udpDatagram(40000, port, []byte("martian")))
	frame := slices.Concat([]byte(gw), []byte(link.Attrs().HardwareAddr), []byte{0x08, 0x00}, ip)
	sa := &unix.SockaddrLinklayer{Protocol: htons, Ifindex: link.Attrs().Index, Halen: 6}
	copy(sa.Addr[:], gw)
	return unix.Sendto(fd, frame, 0, sa)
}

func TestPortmapMartian(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(host netns.NsHandle) { testPortmapMartian(t, backend, host) })
		})
	}
}

func testPortmapMartian(t *testing.T, backend string, host netns.NsHandle) {
	topo := wirePortmap(t, host)
	br, err := netlink.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	// A service of the host that only listens on loopback.
	lo, err := net.ListenPacket("udp4", "127.0.0.1:9999")
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	received := func(wait time.Duration) bool {
		t.Helper()
		doIn(t, topo.c2, func() error {
			return sendFrameToLoopback("eth0", br.Attrs().HardwareAddr, netip.MustParseAddr(pmC24), 9999)
		})
		lo.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 64)
		n, _, err := lo.ReadFrom(buf)
		return err == nil && string(buf[:n]) == "martian"
	}

	// Without mappings, route_localnet on the bridge lets a neighbour in: the hole the rules close.
	// The frame is sent again until one arrives: the new bridge port forwards only once the
	// kernel has seen its carrier come up, which may take a moment.
	deadline := time.Now().Add(5 * time.Second)
	got := received(200 * time.Millisecond)
	for !got && time.Now().Before(deadline) {
		got = received(200 * time.Millisecond)
	}
	if !got {
		t.Fatal("control: the loopback service did not get the neighbour's datagram with route_localnet on; the test cannot show the protection")
	}

	p := newPM(t, backend)
	ms := []PortMapping{pmap(t, "tcp", "", 8080, pmC14+"/24", 80)}
	pmAdd(t, p, ms...)
	if received(500 * time.Millisecond) {
		t.Error("with a published port, a neighbour's datagram to 127.0.0.1 reached the host's loopback service")
	}
	if n := martianDrops(t, backend, true); n == 0 {
		t.Error("the drop rule for loopback destinations counted nothing")
	}

	// ext resolves the host's MAC address first: its ARP request for the spoofed packet would
	// carry 127.0.0.1 as the sender, which the host ignores.
	wantNoAnswer(t, "priming ARP", topo.ext, "tcp4", net.JoinHostPort(pmUp4, "1"))
	before := martianDrops(t, backend, false)
	doIn(t, topo.ext, func() error { return sendSpoofedSYN(netip.AddrPortFrom(netip.MustParseAddr(pmUp4), 8080)) })
	deadline = time.Now().Add(2 * time.Second)
	for martianDrops(t, backend, false) == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := martianDrops(t, backend, false); after == before {
		t.Error("a SYN from ext with source 127.0.0.1 to the published port was not dropped by the martian rule")
	}

	pmDel(t, p, ms...)
	pmNothingLeft(t)
}

// BenchmarkPortmapAddDel measures Add+Del of one container with one mapping next to n
// published ports.
func BenchmarkPortmapAddDel(b *testing.B) {
	for _, backend := range backends {
		for _, n := range []int{10, 500} {
			b.Run(fmt.Sprintf("%s/existing=%d", backend, n), func(b *testing.B) {
				inThrowawayNS(b, func(netns.NsHandle) {
					p := newPM(b, backend)
					existing := make([]PortMapping, n)
					for i := range existing {
						existing[i] = benchMapping(b, i)
					}
					pmAdd(b, p, existing...)
					m := []PortMapping{pmap(b, "tcp", "", 9999, "10.61.0.2/16", 80)}
					for b.Loop() {
						if err := p.Add(m); err != nil {
							b.Fatal(err)
						}
						if err := p.Del(m); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}
