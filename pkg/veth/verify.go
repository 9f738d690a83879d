package veth

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// Expect is what CHECK expects of a container interface.
type Expect struct {
	IfName string
	MAC    string // "" skips the MAC check
	Addrs  []*net.IPNet
	Routes []*types.Route
}

// Verify checks, inside contNS, that the interface exists with the expected
// MAC and addresses and that every expected route is in the routing table.
func Verify(contNS ns.NetNS, e Expect) error {
	return contNS.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(e.IfName)
		if err != nil {
			return fmt.Errorf("container interface %s: %w", e.IfName, err)
		}
		if e.MAC != "" && l.Attrs().HardwareAddr.String() != e.MAC {
			return fmt.Errorf("container interface %s has MAC %s, want %s", e.IfName, l.Attrs().HardwareAddr, e.MAC)
		}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", e.IfName, err)
		}
		for _, want := range e.Addrs {
			found := false
			for _, a := range addrs {
				if a.IP.Equal(want.IP) && a.Mask.String() == want.Mask.String() {
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("container interface %s lacks address %s", e.IfName, want)
			}
		}
		for _, r := range e.Routes {
			if err := verifyRoute(r); err != nil {
				return err
			}
		}
		return nil
	})
}

func verifyRoute(r *types.Route) error {
	family := netlink.FAMILY_V4
	if r.Dst.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	dst := r.Dst
	filter := &netlink.Route{Dst: &dst}
	mask := netlink.RT_FILTER_DST
	if r.Table != nil {
		filter.Table = *r.Table
		mask |= netlink.RT_FILTER_TABLE
	}
	routes, err := netlinksafe.RouteListFiltered(family, filter, mask)
	if err != nil {
		return fmt.Errorf("listing routes to %s: %w", dst.String(), err)
	}
	for _, got := range routes {
		if r.GW == nil || got.Gw.Equal(r.GW) {
			return nil
		}
		for _, nh := range got.MultiPath {
			if nh.Gw.Equal(r.GW) {
				return nil
			}
		}
	}
	if r.GW != nil {
		return fmt.Errorf("container has no route to %s via %s", dst.String(), r.GW)
	}
	return fmt.Errorf("container has no route to %s", dst.String())
}
