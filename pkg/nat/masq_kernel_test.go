package nat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var backends = []string{BackendNftables, BackendIptables}

// ent builds an entry from "address/prefix-length", the form of a CNI result's address.
func ent(tb testing.TB, network, cidr string) MasqEntry {
	tb.Helper()
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		tb.Fatal(err)
	}
	return MasqEntry{Network: network, Subnet: n, IP: ip}
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func newMasq(tb testing.TB, backend string) Masquerader {
	tb.Helper()
	assertNotStartNS(tb)
	if err := Available(backend); err != nil {
		tb.Fatalf("Available(%q): %v", backend, err)
	}
	m, err := NewMasquerader(backend)
	if err != nil {
		tb.Fatalf("NewMasquerader(%q): %v", backend, err)
	}
	if m.Backend() != backend {
		tb.Fatalf("Backend() = %q, want %q", m.Backend(), backend)
	}
	return m
}

func mustAdd(tb testing.TB, m Masquerader, es ...MasqEntry) {
	tb.Helper()
	assertNotStartNS(tb)
	for _, e := range es {
		if err := m.Add(e); err != nil {
			tb.Fatalf("Add: %v", err)
		}
	}
}

func mustDel(tb testing.TB, m Masquerader, es ...MasqEntry) {
	tb.Helper()
	assertNotStartNS(tb)
	for _, e := range es {
		if err := m.Del(e); err != nil {
			tb.Fatalf("Del: %v", err)
		}
	}
}

func wantCheckOK(tb testing.TB, m Masquerader, es ...MasqEntry) {
	tb.Helper()
	assertNotStartNS(tb)
	for _, e := range es {
		if err := m.Check(e); err != nil {
			tb.Errorf("Check(%s %s): %v", e.Network, e.IP, err)
		}
	}
}

func wantCheckFails(tb testing.TB, m Masquerader, e MasqEntry, contains ...string) {
	tb.Helper()
	assertNotStartNS(tb)
	err := m.Check(e)
	if err == nil {
		tb.Errorf("Check(%s %s) = nil, want an error", e.Network, e.IP)
		return
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			tb.Errorf("Check(%s %s) = %q, want it to mention %q", e.Network, e.IP, err, s)
		}
	}
}

func wantEntries(tb testing.TB, m Masquerader, network string, want ...string) {
	tb.Helper()
	assertNotStartNS(tb)
	got, err := m.Entries(network)
	if err != nil {
		tb.Fatalf("Entries(%s): %v", network, err)
	}
	if want == nil {
		want = []string{}
	}
	if !slices.Equal(ipStrings(got), want) {
		tb.Errorf("Entries(%s) = %v, want %v", network, ipStrings(got), want)
	}
}

var iptSaveNoise = regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`)

// ruleset returns everything netfilter holds in the current netns: the nftables ruleset
// (which includes what iptables-nft made) and the iptables view of the nat tables.
func ruleset(tb testing.TB) string {
	tb.Helper()
	return run(tb, "nft", "list", "ruleset") +
		iptSaveNoise.ReplaceAllString(run(tb, "iptables-save", "-t", "nat"), "") +
		iptSaveNoise.ReplaceAllString(run(tb, "ip6tables-save", "-t", "nat"), "")
}

// wantNothingLeft checks through the libraries and through the command-line tools that no
// nsnet object remains.
func wantNothingLeft(tb testing.TB) {
	tb.Helper()
	if rs := ruleset(tb); strings.Contains(strings.ToLower(rs), "nsnet") {
		tb.Errorf("nsnet objects left behind:\n%s", rs)
	}
	c, err := nftables.New()
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.ListTableOfFamily(nftTableName, nftables.TableFamilyINet); !errors.Is(err, unix.ENOENT) {
		tb.Errorf("table inet %s: lookup error %v, want ENOENT", nftTableName, err)
	}
	m, err := newIptMasq()
	if err != nil {
		tb.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		ipt, err := m.handle(v6)
		if err != nil {
			tb.Fatal(err)
		}
		chains, err := ipt.ListChains(iptNatTable)
		if err != nil {
			tb.Fatal(err)
		}
		for _, ch := range chains {
			if strings.HasPrefix(ch, "NSNET") {
				tb.Errorf("iptables (v6=%v) still has chain %s", v6, ch)
			}
		}
	}
}

// structure counts the nsnet objects of one network and family: nftables rules and sets, or
// iptables rules in the per-network chain (the part that must not grow with its members).
func structure(tb testing.TB, backend, network string, v6 bool) (rules, sets int) {
	tb.Helper()
	assertNotStartNS(tb)
	if backend == BackendNftables {
		c, err := nftables.New()
		if err != nil {
			tb.Fatal(err)
		}
		st, err := readNftNet(c, nftNetNames(network, v6), true)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range []*nftables.Set{st.src, st.dst} {
			if s != nil {
				sets++
			}
		}
		return len(st.rules), sets
	}
	m, err := newIptMasq()
	if err != nil {
		tb.Fatal(err)
	}
	ipt, err := m.handle(v6)
	if err != nil {
		tb.Fatal(err)
	}
	rs, _, err := iptList(ipt, iptNetChain(network))
	if err != nil {
		tb.Fatal(err)
	}
	return len(rs), 0
}

func TestMasqLifecycle(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(netns.NsHandle) { testLifecycle(t, backend) })
		})
	}
}

func testLifecycle(t *testing.T, backend string) {
	m := newMasq(t, backend)
	a1 := ent(t, "net-a", "10.88.0.5/16")
	a2 := ent(t, "net-a", "10.88.0.6/16")
	a6 := ent(t, "net-a", "fd00:88::5/64")
	b1 := ent(t, "net-b", "10.99.1.5/24")
	b6 := ent(t, "net-b", "fd00:99::5/64")
	all := []MasqEntry{a1, a2, a6, b1, b6}

	wantEntries(t, m, "net-a")
	wantCheckFails(t, m, a1, "missing")

	mustAdd(t, m, all...)
	wantCheckOK(t, m, all...)
	wantEntries(t, m, "net-a", "10.88.0.5", "10.88.0.6", "fd00:88::5")
	wantEntries(t, m, "net-b", "10.99.1.5", "fd00:99::5")
	wantEntries(t, m, "net-c")

	before := ruleset(t)
	mustAdd(t, m, all...)
	if after := ruleset(t); after != before {
		t.Errorf("a second Add changed the rules:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	t.Logf("ruleset with 5 entries in 2 networks:\n%s", before)

	wantRules := map[string]int{BackendNftables: 1, BackendIptables: 3} // iptables: RETURN subnet, RETURN multicast, MASQUERADE
	wantSets := map[string]int{BackendNftables: 2, BackendIptables: 0}
	for _, v6 := range []bool{false, true} {
		if rules, sets := structure(t, backend, "net-a", v6); rules != wantRules[backend] || sets != wantSets[backend] {
			t.Errorf("net-a (v6=%v) has %d rules and %d sets, want %d and %d", v6, rules, sets, wantRules[backend], wantSets[backend])
		}
	}

	mustDel(t, m, a1)
	wantCheckFails(t, m, a1, "10.88.0.5")
	wantCheckOK(t, m, a2, a6, b1, b6)
	wantEntries(t, m, "net-a", "10.88.0.6", "fd00:88::5")
	mustDel(t, m, a1) // idempotent

	// Damage net-b's IPv4 half by hand: Check must say what is missing, Add must repair it.
	switch backend {
	case BackendNftables:
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		names := nftNetNames("net-b", false)
		st, err := readNftNet(c, names, true)
		if err != nil || len(st.rules) != 1 {
			t.Fatalf("reading net-b: %v, %d rules", err, len(st.rules))
		}
		if err := c.DelRule(st.rules[0]); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		wantCheckFails(t, m, b1, "rule", "is missing")
		run(t, "nft", "delete", "element", "inet", nftTableName, names.src, "{ 10.99.1.5 }")
		wantCheckFails(t, m, b1, "lacks 10.99.1.5")
	case BackendIptables:
		run(t, "iptables", "-t", "nat", "-F", iptNetChain("net-b"))
		wantCheckFails(t, m, b1, "no RETURN for subnet 10.99.1.0/24", "does not end with MASQUERADE")
		run(t, "iptables", "-t", "nat", "-D", iptPostrouting, "-m", "comment", "--comment", iptJumpComment, "-j", iptTopChain)
		wantCheckFails(t, m, b1, "jump from POSTROUTING")
	}
	wantCheckOK(t, m, b6)
	mustAdd(t, m, b1)
	wantCheckOK(t, m, a2, a6, b1, b6)

	mustDel(t, m, all...)
	wantNothingLeft(t)
	wantEntries(t, m, "net-a")
	wantEntries(t, m, "net-b")
	wantCheckFails(t, m, b6, "missing")
	mustDel(t, m, all...) // idempotent on an empty netns
}

func TestMasqSubnets(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(netns.NsHandle) { testSubnets(t, backend) })
		})
	}
}

// subnetList returns the network's subnet exclusions as the backend stores them.
func subnetList(tb testing.TB, backend, network string) []string {
	tb.Helper()
	assertNotStartNS(tb)
	var out []string
	if backend == BackendNftables {
		c, err := nftables.New()
		if err != nil {
			tb.Fatal(err)
		}
		st, err := readNftNet(c, nftNetNames(network, false), true)
		if err != nil {
			tb.Fatal(err)
		}
		for _, iv := range st.intervals {
			out = append(out, fmt.Sprintf("%s-%s", iv.start, iv.end))
		}
		return out
	}
	m, err := newIptMasq()
	if err != nil {
		tb.Fatal(err)
	}
	rules, _, err := iptList(m.v4, iptNetChain(network))
	if err != nil {
		tb.Fatal(err)
	}
	for _, r := range rules {
		if r.isReturn() && r.dst != multicastPrefix(false) {
			out = append(out, r.dst.String())
		}
	}
	slices.Sort(out)
	return out
}

func testSubnets(t *testing.T, backend string) {
	m := newMasq(t, backend)
	want := func(nft, ipt []string) {
		t.Helper()
		w := map[string][]string{BackendNftables: nft, BackendIptables: ipt}[backend]
		if got := subnetList(t, backend, "multi"); !slices.Equal(got, w) {
			t.Errorf("subnets = %v, want %v", got, w)
		}
	}
	e1 := ent(t, "multi", "10.10.0.5/24")
	e2 := ent(t, "multi", "10.10.1.5/24")
	wide := ent(t, "multi", "10.10.2.5/16")

	mustAdd(t, m, e1, e2)
	wantCheckOK(t, m, e1, e2)
	want([]string{"10.10.0.0-10.10.1.0", "10.10.1.0-10.10.2.0"}, []string{"10.10.0.0/24", "10.10.1.0/24"})

	// A covering subnet replaces the narrower ones in one change, and gives them back when it goes.
	mustAdd(t, m, wide)
	wantCheckOK(t, m, e1, e2, wide)
	want([]string{"10.10.0.0-10.11.0.0"}, []string{"10.10.0.0/16"})
	mustDel(t, m, wide)
	wantCheckOK(t, m, e1, e2)
	want([]string{"10.10.0.0-10.10.1.0", "10.10.1.0-10.10.2.0"}, []string{"10.10.0.0/24", "10.10.1.0/24"})

	// The same address added again with another subnet (a changed range) replaces its record.
	moved := ent(t, "multi", "10.10.0.5/23")
	mustAdd(t, m, moved)
	wantCheckOK(t, m, moved, e2)
	wantCheckFails(t, m, e1, "10.10.0.0/23")
	want([]string{"10.10.0.0-10.10.2.0"}, []string{"10.10.0.0/23"})
	wantEntries(t, m, "multi", "10.10.0.5", "10.10.1.5")

	// Del with the old subnet still finds the address.
	mustDel(t, m, e1)
	wantEntries(t, m, "multi", "10.10.1.5")
	want([]string{"10.10.1.0-10.10.2.0"}, []string{"10.10.1.0/24"})
	mustDel(t, m, e2)
	wantNothingLeft(t)
}

func TestMasqAutoBackend(t *testing.T) {
	inThrowawayNS(t, func(netns.NsHandle) {
		if err := Available(""); err != nil {
			t.Fatalf("Available(auto): %v", err)
		}
		m, err := NewMasquerader("")
		if err != nil {
			t.Fatal(err)
		}
		if m.Backend() != BackendNftables {
			t.Errorf("auto picked %s, want nftables on this kernel", m.Backend())
		}
	})
}

func TestMasqScale(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			if backend == BackendIptables && testing.Short() {
				t.Skip("300 iptables entries take a while; skipped with -short")
			}
			inThrowawayNS(t, func(netns.NsHandle) { testScale(t, backend, 300) })
		})
	}
}

func scaleEntry(tb testing.TB, network string, i int) MasqEntry {
	return ent(tb, network, fmt.Sprintf("10.%d.%d.%d/16", 50+i/60000, (i/250)%240, i%250+2))
}

func testScale(t *testing.T, backend string, n int) {
	m := newMasq(t, backend)
	// A small second network keeps the per-network structure honest.
	other := ent(t, "other", "10.40.0.2/24")
	mustAdd(t, m, other)

	es := make([]MasqEntry, n)
	add := make([]time.Duration, n)
	for i := range es {
		es[i] = scaleEntry(t, "scale", i)
		start := time.Now()
		mustAdd(t, m, es[i])
		add[i] = time.Since(start)
	}
	wantRules := map[string]int{BackendNftables: 1, BackendIptables: 3}[backend]
	if rules, _ := structure(t, backend, "scale", false); rules != wantRules {
		t.Errorf("%d members: %d rules for the network, want %d", n, rules, wantRules)
	}
	got, err := m.Entries("scale")
	if err != nil || len(got) != n {
		t.Fatalf("Entries: %d addresses, %v; want %d", len(got), err, n)
	}
	wantCheckOK(t, m, es[0], es[n/2], es[n-1], other)

	del := make([]time.Duration, n)
	for i := range es {
		start := time.Now()
		mustDel(t, m, es[i])
		del[i] = time.Since(start)
	}
	avg := func(ds []time.Duration) time.Duration {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum / time.Duration(len(ds))
	}
	k := min(20, n/4)
	t.Logf("%s: Add avg %v for the first %d, %v for the last %d; Del avg %v with %d+ members left, %v for the last %d",
		backend, avg(add[:k]), k, avg(add[n-k:]), k, avg(del[:k]), n-k, avg(del[n-k:]), k)
	wantCheckOK(t, m, other)
	wantEntries(t, m, "scale")
	mustDel(t, m, other)
	wantNothingLeft(t)
}

func TestNftConcurrentAddDel(t *testing.T) {
	inThrowawayNS(t, func(ns netns.NsHandle) {
		m := newMasq(t, BackendNftables)
		const workers, each = 6, 5
		var es [workers][]MasqEntry
		for w := range workers {
			for i := range each {
				es[w] = append(es[w], ent(t, "race", fmt.Sprintf("10.77.%d.%d/16", w, i+2)))
			}
		}
		parallel := func(op func(Masquerader, MasqEntry) error) {
			t.Helper()
			raceIn(t, ns, workers, func(w int) error {
				for _, e := range es[w] {
					if err := op(m, e); err != nil {
						return err
					}
				}
				return nil
			})
		}

		parallel(Masquerader.Add)
		for w := range workers {
			wantCheckOK(t, m, es[w]...)
		}
		if rules, sets := structure(t, BackendNftables, "race", false); rules != 1 || sets != 2 {
			t.Errorf("after racing Adds: %d rules and %d sets, want 1 and 2", rules, sets)
		}
		got, err := m.Entries("race")
		if err != nil || len(got) != workers*each {
			t.Errorf("Entries: %d, %v; want %d", len(got), err, workers*each)
		}

		parallel(Masquerader.Del)
		wantNothingLeft(t)
	})
}

// TestMasqPacket connects over TCP from a "container" netns through the test's "host" netns
// to an "ext" netns and looks at the source address ext sees: the host's own address when the
// connection is masqueraded, the container's when it is not.
func TestMasqPacket(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			inThrowawayNS(t, func(netns.NsHandle) { testPacket(t, backend) })
		})
	}
}

func testPacket(t *testing.T, backend string) {
	ctr, ext := newSideNS(t), newSideNS(t)
	wire(t, ctr, ext)
	m := newMasq(t, backend)
	for _, f := range []struct {
		network, extAddr, host, container, containerCIDR, neighbour string
	}{
		{"tcp4", "10.201.0.2", "10.201.0.1", "10.200.0.2", "10.200.0.2/24", "10.201.0.99/24"},
		{"tcp6", "fd00:201::2", "fd00:201::1", "fd00:200::2", "fd00:200::2/64", "fd00:201::99/64"},
	} {
		var ln net.Listener
		doIn(t, ext, func() error {
			var err error
			ln, err = net.Listen(f.network, net.JoinHostPort(f.extAddr, "0"))
			return err
		})
		defer ln.Close()
		peers := make(chan netip.Addr, 1)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				peers <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
				c.Close()
			}
		}()
		wantPeer := func(what, want string) {
			t.Helper()
			if err := runIn(ctr, func() error {
				c, err := net.DialTimeout(f.network, ln.Addr().String(), 5*time.Second)
				if err != nil {
					return err
				}
				return c.Close()
			}); err != nil {
				t.Fatalf("%s %s: connecting: %v", f.network, what, err)
			}
			select {
			case peer := <-peers:
				if peer.String() != want {
					t.Errorf("%s %s: ext saw the connection from %s, want %s", f.network, what, peer, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s %s: ext accepted nothing", f.network, what)
			}
		}

		wantPeer("without masquerade", f.container)
		e := ent(t, "pkt", f.containerCIDR)
		mustAdd(t, m, e)
		wantPeer("masqueraded", f.host)

		// A member in ext's subnet makes that subnet part of the network: no masquerade towards it.
		neighbour := ent(t, "pkt", f.neighbour)
		mustAdd(t, m, neighbour)
		wantPeer("to a subnet of the network", f.container)
		mustDel(t, m, neighbour)
		wantPeer("after the neighbour left", f.host)

		mustDel(t, m, e)
		wantPeer("after Del", f.container)
	}
	wantNothingLeft(t)
}

// wire builds ctr (10.200.0.2/24, fd00:200::2/64) <-> host (10.200.0.1/24, fd00:200::1/64 |
// 10.201.0.1/24, fd00:201::1/64) <-> ext (10.201.0.2/24, fd00:201::2/64), with forwarding on in
// the host netns, which is the calling thread's. ext routes back to the container subnets, so
// connections work with and without masquerade.
func wire(tb testing.TB, ctr, ext netns.NsHandle) {
	tb.Helper()
	assertNotStartNS(tb)
	if err := wireHost(ctr, ext); err != nil {
		tb.Fatal(err)
	}
	doIn(tb, ctr, func() error {
		return wireSide("c0", []string{"10.200.0.2/24", "fd00:200::2/64"},
			[][2]string{{"", "10.200.0.1"}, {"", "fd00:200::1"}})
	})
	doIn(tb, ext, func() error {
		return wireSide("e0", []string{"10.201.0.2/24", "fd00:201::2/64"},
			[][2]string{{"10.200.0.0/24", "10.201.0.1"}, {"fd00:200::/64", "fd00:201::1"}})
	})
}

// BenchmarkMasqAddDel measures one container's Add+Del next to n existing members of the
// same network; with the shared per-network structure the cost should barely move with n.
func BenchmarkMasqAddDel(b *testing.B) {
	for _, backend := range backends {
		for _, n := range []int{10, 500} {
			b.Run(fmt.Sprintf("%s/existing=%d", backend, n), func(b *testing.B) {
				inThrowawayNS(b, func(netns.NsHandle) {
					m := newMasq(b, backend)
					for i := range n {
						mustAdd(b, m, scaleEntry(b, "bench", i))
					}
					e := ent(b, "bench", "10.49.0.2/16")
					for b.Loop() {
						if err := m.Add(e); err != nil {
							b.Fatal(err)
						}
						if err := m.Del(e); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}
