package bridge

import (
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/nsnet/nsnet/internal/testns"
	"github.com/nsnet/nsnet/pkg/sysctl"
)

func TestEnsurePinsMACAndAttaches(t *testing.T) {
	host := testns.New(t)
	err := host.Do(func(ns.NetNS) error {
		br, err := Ensure(Config{Name: "tbr0", MTU: 1400})
		if err != nil {
			return err
		}
		mac := br.Attrs().HardwareAddr.String()
		for _, key := range []string{"accept_ra", "accept_dad"} {
			if v, _ := sysctl.Get(sysctl.PathOf("net", "ipv6", "conf", "tbr0", key)); v != "0" {
				t.Errorf("%s = %q, want 0", key, v)
			}
		}
		// A port with a lower MAC would become the bridge's MAC if it
		// were not pinned.
		low, _ := net.ParseMAC("02:00:00:00:00:01")
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tv0", HardwareAddr: low}, PeerName: "tv1"}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		port, _ := netlink.LinkByName("tv0")
		if err := Attach(br, port, Port{Hairpin: true}); err != nil {
			return err
		}
		peer, _ := netlink.LinkByName("tv1")
		if err := netlink.LinkSetUp(peer); err != nil {
			return err
		}
		if err := WaitForwarding("tv0", 3e9); err != nil {
			return err
		}
		again, err := Ensure(Config{Name: "tbr0"})
		if err != nil {
			return err
		}
		if got := again.Attrs().HardwareAddr.String(); got != mac {
			t.Errorf("bridge MAC changed from %s to %s when a port joined", mac, got)
		}
		port, _ = netlink.LinkByName("tv0")
		if port.Attrs().MasterIndex != br.Attrs().Index {
			t.Error("port not attached")
		}
		pi, err := netlink.LinkGetProtinfo(port)
		if err != nil {
			return err
		}
		if !pi.Hairpin {
			t.Error("hairpin not set")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnsureRefusesNonBridge(t *testing.T) {
	host := testns.New(t)
	err := host.Do(func(ns.NetNS) error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tbr1"}, PeerName: "tbr1p"}); err != nil {
			return err
		}
		_, err := Ensure(Config{Name: "tbr1"})
		if err == nil || !strings.Contains(err.Error(), "not a bridge") {
			t.Errorf("err = %v, want 'not a bridge'", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnsureAddr(t *testing.T) {
	host := testns.New(t)
	err := host.Do(func(ns.NetNS) error {
		br, err := Ensure(Config{Name: "tbr2"})
		if err != nil {
			return err
		}
		a := &net.IPNet{IP: net.ParseIP("10.10.0.1").To4(), Mask: net.CIDRMask(24, 32)}
		if err := EnsureAddr(br, a, false); err != nil {
			return err
		}
		if err := EnsureAddr(br, a, false); err != nil {
			t.Errorf("same address twice: %v", err)
		}
		b := &net.IPNet{IP: net.ParseIP("10.20.0.1").To4(), Mask: net.CIDRMask(24, 32)}
		if err := EnsureAddr(br, b, false); err == nil || !strings.Contains(err.Error(), "forceAddress") {
			t.Errorf("different address without force: err = %v", err)
		}
		if err := EnsureAddr(br, b, true); err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
		if len(addrs) != 1 || !addrs[0].IP.Equal(b.IP) {
			t.Errorf("addresses after force = %v, want only %s", addrs, b)
		}
		v6 := &net.IPNet{IP: net.ParseIP("fd00:1::1"), Mask: net.CIDRMask(64, 128)}
		if err := EnsureAddr(br, v6, false); err != nil {
			t.Errorf("adding IPv6 next to IPv4: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDefaultRouteMTU(t *testing.T) {
	host := testns.New(t)
	err := host.Do(func(ns.NetNS) error {
		if mtu, err := DefaultRouteMTU(); err != nil || mtu != 0 {
			t.Errorf("no default route: mtu=%d err=%v, want 0", mtu, err)
		}
		d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0", MTU: 1400}, PeerName: "up1"}
		if err := netlink.LinkAdd(d); err != nil {
			return err
		}
		for _, n := range []string{"up1", "up0"} {
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("up0")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.97.0.1"), Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{Gw: net.ParseIP("10.97.0.2"), LinkIndex: l.Attrs().Index}); err != nil {
			return err
		}
		if mtu, err := DefaultRouteMTU(); err != nil || mtu != 1400 {
			t.Errorf("mtu=%d err=%v, want 1400", mtu, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
