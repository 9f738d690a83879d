package nat

import (
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// wireHost runs on the test's host thread: it creates the two veth pairs with their far ends
// in ctr and ext, addresses the near ends and turns on forwarding in this netns.
func wireHost(ctr, ext netns.NsHandle) error {
	pairs := []struct {
		name, peer string
		addrs      []string
		peerNS     netns.NsHandle
	}{
		{"hc0", "c0", []string{"10.200.0.1/24", "fd00:200::1/64"}, ctr},
		{"he0", "e0", []string{"10.201.0.1/24", "fd00:201::1/64"}, ext},
	}
	for _, p := range pairs {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.name}, PeerName: p.peer, PeerNamespace: netlink.NsFd(int(p.peerNS))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("creating veth %s/%s: %w", p.name, p.peer, err)
		}
		if err := addrsUp(p.name, p.addrs); err != nil {
			return err
		}
	}
	// /proc/sys/net shows the netns of the thread that opens it.
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enabling forwarding: %w", err)
		}
	}
	return nil
}

// wireSide runs in ctr or ext: it addresses the veth end and adds routes, each {destination
// (default if empty), gateway}.
func wireSide(name string, addrs []string, routes [][2]string) error {
	if err := addrsUp(name, addrs); err != nil {
		return err
	}
	for _, r := range routes {
		route := &netlink.Route{Gw: net.ParseIP(r[1])}
		if r[0] != "" {
			_, n, err := net.ParseCIDR(r[0])
			if err != nil {
				return err
			}
			route.Dst = n
		}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("adding route to %q via %s: %w", r[0], r[1], err)
		}
	}
	return nil
}

// addrsUp adds the addresses to a link (IPv6 without duplicate address detection, so they
// are usable at once) and sets it up.
func addrsUp(name string, cidrs []string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	for _, cidr := range cidrs {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		a.Flags = unix.IFA_F_NODAD
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("adding %s to %s: %w", cidr, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}
