package macspoof

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	labBridge = "nsms-br"
	bridgeIP  = "10.123.0.1"
)

// lab is a throw-away "host" netns, which the test goroutine's thread is
// switched into, with a bridge and containers attached to it, each in an
// unnamed netns of its own.
type lab struct {
	t     *testing.T
	host  netns.NsHandle
	hostH *netlink.Handle
	br    netlink.Link
}

type container struct {
	ns      netns.NsHandle
	h       *netlink.Handle
	hostEnd string
	ip      string
}

// newLab locks the calling goroutine to its thread and moves the thread
// into a new netns; the returned func must be deferred by that goroutine.
func newLab(t *testing.T) (*lab, func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and nftables tables")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("getting the original netns: %v", err)
	}
	host, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("creating the host netns: %v", err)
	}
	l := &lab{t: t, host: host}
	var closers []func()
	restore := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with the goroutine instead
			// of running other goroutines in the wrong netns.
			t.Errorf("returning to the original netns: %v", err)
			return
		}
		host.Close()
		orig.Close()
		runtime.UnlockOSThread()
	}
	l.mustBeInHost(orig)

	if l.hostH, err = netlink.NewHandleAt(host); err != nil {
		restore()
		t.Fatalf("netlink handle for the host netns: %v", err)
	}
	closers = append(closers, l.hostH.Close)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: labBridge}}
	if err := l.hostH.LinkAdd(br); err != nil {
		restore()
		t.Fatalf("adding bridge: %v", err)
	}
	if l.br, err = l.hostH.LinkByName(labBridge); err != nil {
		restore()
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(bridgeIP + "/24")
	if err := l.hostH.AddrAdd(l.br, addr); err != nil {
		restore()
		t.Fatal(err)
	}
	if err := l.hostH.LinkSetUp(l.br); err != nil {
		restore()
		t.Fatal(err)
	}
	return l, restore
}

// mustBeInHost stops the test unless the thread left orig for the lab's
// host netns, so nothing below can touch the machine's own netns.
func (l *lab) mustBeInHost(orig netns.NsHandle) {
	cur, err := netns.Get()
	if err != nil {
		l.t.Fatalf("getting the current netns: %v", err)
	}
	defer cur.Close()
	if cur.Equal(orig) || !cur.Equal(l.host) {
		l.t.Fatal("the test thread is not in the lab's host netns")
	}
}

// addContainer makes a netns holding eth0 with mac and ip, its peer
// hostEnd attached to the bridge. The netns goes away when closed.
func (l *lab) addContainer(hostEnd, mac, ip string) *container {
	l.t.Helper()
	cns, err := netns.New()
	if err != nil {
		l.t.Fatalf("creating a container netns: %v", err)
	}
	// netns.New moved the thread; return before anything else happens.
	if err := netns.Set(l.host); err != nil {
		cns.Close()
		l.t.Fatalf("returning to the host netns: %v", err)
	}
	c := &container{ns: cns, hostEnd: hostEnd, ip: ip}
	l.t.Cleanup(func() { cns.Close() })
	if c.h, err = netlink.NewHandleAt(cns); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(c.h.Close)

	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostEnd, MasterIndex: l.br.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(cns),
	}
	if err := l.hostH.LinkAdd(v); err != nil {
		l.t.Fatalf("adding veth %s: %v", hostEnd, err)
	}
	if err := l.hostH.LinkSetUp(v); err != nil {
		l.t.Fatal(err)
	}
	eth0, err := c.h.LinkByName("eth0")
	if err != nil {
		l.t.Fatal(err)
	}
	if err := c.h.LinkSetHardwareAddr(eth0, mustMAC(l.t, mac)); err != nil {
		l.t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(ip + "/24")
	if err := c.h.AddrAdd(eth0, addr); err != nil {
		l.t.Fatal(err)
	}
	if err := c.h.LinkSetUp(eth0); err != nil {
		l.t.Fatal(err)
	}
	return c
}

func (l *lab) setMAC(c *container, mac string) {
	l.t.Helper()
	eth0, err := c.h.LinkByName("eth0")
	if err != nil {
		l.t.Fatal(err)
	}
	if err := c.h.LinkSetHardwareAddr(eth0, mustMAC(l.t, mac)); err != nil {
		l.t.Fatal(err)
	}
}

// ping sends echo requests from c to the bridge. The host forgets its
// neighbours first, so a reply never fails only for going to a MAC the
// container dropped.
func (l *lab) ping(c *container, tries int) error {
	l.t.Helper()
	neighs, err := l.hostH.NeighList(l.br.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, n := range neighs {
		_ = l.hostH.NeighDel(&n)
	}
	if err := netns.Set(c.ns); err != nil {
		l.t.Fatalf("entering container netns: %v", err)
	}
	// The child inherits this thread's netns.
	out, err := exec.Command("ping", "-n", "-q", "-c", fmt.Sprint(tries), "-W", "1", "-i", "0.2", bridgeIP).CombinedOutput()
	if serr := netns.Set(l.host); serr != nil {
		l.t.Fatalf("returning to the host netns: %v", serr)
	}
	if err != nil {
		return fmt.Errorf("ping from %s: %w: %s", c.ip, err, out)
	}
	return nil
}

func (l *lab) mustReach(c *container, why string) {
	l.t.Helper()
	// A few tries, as the first ARP exchange may race port setup.
	var err error
	for range 3 {
		if err = l.ping(c, 2); err == nil {
			return
		}
	}
	l.t.Fatalf("%s: %v", why, err)
}

func (l *lab) mustNotReach(c *container, why string) {
	l.t.Helper()
	if err := l.ping(c, 3); err == nil {
		l.t.Fatalf("%s: ping from %s got through", why, c.ip)
	}
}

func nft(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("nft", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *lab) ruleCount() int {
	l.t.Helper()
	c, err := dial()
	if err != nil {
		l.t.Fatal(err)
	}
	defer c.CloseLasting()
	_, rules, err := readChain(c, newRuleset())
	if err != nil {
		l.t.Fatal(err)
	}
	return len(rules)
}

func mustCheckFail(t *testing.T, port, mac, want string) {
	t.Helper()
	err := Check(port, mustMAC(t, mac))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Check(%s, %s) = %v, want an error containing %q", port, mac, err, want)
	}
}

func TestGuardWithPackets(t *testing.T) {
	l, restore := newLab(t)
	defer restore()

	const (
		mac1, spoof1 = "02:00:0a:7b:00:0b", "02:00:0a:7b:00:bb"
		mac2, spoof2 = "02:00:0a:7b:00:0c", "02:00:0a:7b:00:cc"
	)
	c1 := l.addContainer("nsms-h1", mac1, "10.123.0.11")
	c2 := l.addContainer("nsms-h2", mac2, "10.123.0.12")

	if err := Del(c1.hostEnd); err != nil {
		t.Fatalf("Del without a table: %v", err)
	}
	mustCheckFail(t, c1.hostEnd, mac1, "table bridge nsnet-macspoof is missing")
	l.mustReach(c1, "before any guard")
	l.mustReach(c2, "before any guard")

	for range 2 {
		if err := Add(c1.hostEnd, mustMAC(t, mac1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := Check(c1.hostEnd, mustMAC(t, mac1)); err != nil {
		t.Fatal(err)
	}
	mustCheckFail(t, c2.hostEnd, mac2, "set ports lacks nsms-h2")
	if n := l.ruleCount(); n != 1 {
		t.Fatalf("%d rules after two Adds, want 1", n)
	}
	listing := nft(t, "list", "table", "bridge", tableName)
	t.Logf("nft list table bridge %s:\n%s", tableName, listing)
	for _, want := range []string{
		"hook prerouting priority dstnat",
		`elements = { "nsms-h1" }`,
		`iifname @ports iifname . ether saddr != @allowed drop`,
		`"nsms-h1" . 02:00:0a:7b:00:0b`,
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("nft listing lacks %q", want)
		}
	}

	l.mustReach(c1, "guarded container with its own MAC")
	l.mustReach(c2, "unguarded container")

	l.setMAC(c1, spoof1)
	l.mustNotReach(c1, "guarded container with a changed MAC")
	l.setMAC(c2, spoof2)
	l.mustReach(c2, "unguarded container with a changed MAC")

	// Someone flushed our chain: Check notices, Add repairs.
	nft(t, "flush", "chain", "bridge", tableName, chainName)
	mustCheckFail(t, c1.hostEnd, mac1, "has 0 rules")
	l.mustReach(c1, "spoofing container with the rule flushed")

	if err := Add(c1.hostEnd, mustMAC(t, spoof1)); err != nil {
		t.Fatal(err)
	}
	mustCheckFail(t, c1.hostEnd, mac1, "lacks nsms-h1 . "+mac1)
	if err := Check(c1.hostEnd, mustMAC(t, spoof1)); err != nil {
		t.Fatalf("re-Add with a new MAC: %v", err)
	}
	l.mustReach(c1, "container re-guarded with its new MAC")

	if err := Add(c2.hostEnd, mustMAC(t, spoof2)); err != nil {
		t.Fatal(err)
	}
	if n := l.ruleCount(); n != 1 {
		t.Fatalf("%d rules with two guards, want 1", n)
	}
	l.mustReach(c2, "second guarded container")
	l.setMAC(c2, mac2)
	l.mustNotReach(c2, "second guarded container with a changed MAC")
	l.mustReach(c1, "first container while the second spoofs")

	// Elements nft encodes itself read back as guards and delete cleanly.
	nft(t, "add", "element", "bridge", tableName, portsName, `{ "nsms-x" }`)
	nft(t, "add", "element", "bridge", tableName, allowedName, `{ "nsms-x" . 02:00:00:00:00:99 }`)
	if err := Check("nsms-x", mustMAC(t, "02:00:00:00:00:99")); err != nil {
		t.Fatalf("guard added by nft: %v", err)
	}
	if err := Del("nsms-x"); err != nil {
		t.Fatal(err)
	}

	if err := Del(c2.hostEnd); err != nil {
		t.Fatal(err)
	}
	mustCheckFail(t, c2.hostEnd, spoof2, "set ports lacks nsms-h2")
	if err := Check(c1.hostEnd, mustMAC(t, spoof1)); err != nil {
		t.Fatalf("Del of one guard hurt the other: %v", err)
	}
	l.mustReach(c2, "container whose guard was deleted")
	if err := Del(c2.hostEnd); err != nil {
		t.Fatalf("second Del: %v", err)
	}

	if err := Del(c1.hostEnd); err != nil {
		t.Fatal(err)
	}
	mustCheckFail(t, c1.hostEnd, spoof1, "table bridge nsnet-macspoof is missing")
	if err := Del(c1.hostEnd); err != nil {
		t.Fatalf("Del after the table is gone: %v", err)
	}
	if out := nft(t, "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("ruleset not empty after the last Del:\n%s", out)
	}
}

// TestConcurrent runs Adds, then Dels, of many guards at once; each
// goroutine enters the lab's host netns on a thread of its own.
func TestConcurrent(t *testing.T) {
	l, restore := newLab(t)
	defer restore()

	const n = 16
	run := func(op func(port string) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				// Never unlocked: the thread is discarded when the
				// goroutine ends, so it cannot carry the lab netns along.
				runtime.LockOSThread()
				if err := netns.Set(l.host); err != nil {
					errs <- err
					return
				}
				errs <- op(fmt.Sprintf("nsms-c%d", i))
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	run(func(port string) error {
		return Add(port, net.HardwareAddr{2, 0, 0, 0, 0, port[len(port)-1]})
	})
	for i := range n {
		port := fmt.Sprintf("nsms-c%d", i)
		if err := Check(port, net.HardwareAddr{2, 0, 0, 0, 0, port[len(port)-1]}); err != nil {
			t.Error(err)
		}
	}
	if got := l.ruleCount(); got != 1 {
		t.Fatalf("%d rules after %d concurrent Adds, want 1", got, n)
	}
	run(Del)
	if out := nft(t, "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("ruleset not empty after concurrent Dels:\n%s", out)
	}
}
