// Package bridge manages the Linux bridge that containers' host-side veths
// are enslaved to: creating it with stable properties, putting gateway
// addresses on it and attaching ports that forward before they are handed
// to a container.
package bridge

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/sysctl"
)

// Config describes the bridge device.
type Config struct {
	Name    string
	MTU     int // 0 leaves the kernel default
	Promisc bool
	// VlanFiltering turns on 802.1Q filtering, needed for access ports.
	VlanFiltering bool
}

// Ensure returns the bridge, creating it when missing. It works in the
// current netns and tolerates a concurrent creator.
func Ensure(c Config) (*netlink.Bridge, error) {
	br, err := lookup(c.Name)
	if err != nil {
		return nil, err
	}
	if br == nil {
		if br, err = create(c); err != nil {
			return nil, err
		}
	}
	if c.Promisc && br.Promisc == 0 {
		if err := netlink.SetPromiscOn(br); err != nil {
			return nil, fmt.Errorf("setting %s promiscuous: %w", c.Name, err)
		}
	}
	if c.VlanFiltering && (br.VlanFiltering == nil || !*br.VlanFiltering) {
		if err := netlink.BridgeSetVlanFiltering(br, true); err != nil {
			return nil, fmt.Errorf("enabling vlan filtering on %s: %w", c.Name, err)
		}
	}
	if br.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return nil, fmt.Errorf("setting %s up: %w", c.Name, err)
		}
	}
	return br, nil
}

func lookup(name string) (*netlink.Bridge, error) {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("%s exists but is a %s, not a bridge", name, l.Type())
	}
	return br, nil
}

func create(c Config) (*netlink.Bridge, error) {
	// A bridge normally takes the lowest MAC of its ports, so its MAC (and
	// every neighbour's ARP entry for the gateway) would change as
	// containers come and go. An address set explicitly stays put.
	mac, err := randomMAC()
	if err != nil {
		return nil, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Name, MTU: c.MTU, TxQLen: -1, HardwareAddr: mac}}
	if c.VlanFiltering {
		on := true
		br.VlanFiltering = &on
	}
	if err := netlink.LinkAdd(br); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating bridge %s: %w", c.Name, err)
		}
		// Lost a race with a concurrent ADD: use the winner's bridge.
		got, err := lookup(c.Name)
		if err != nil {
			return nil, err
		}
		if got == nil {
			return nil, fmt.Errorf("bridge %s vanished while being created", c.Name)
		}
		return got, nil
	}
	// Router advertisements on the bridge would give the host addresses
	// and routes from containers. Duplicate address detection would keep
	// the bridge's link-local address tentative for a second or two after
	// its first port comes up, and the kernel sends no neighbour
	// solicitation for forwarded IPv6 traffic until it is done; the host
	// owns the subnet, so there is nothing to detect.
	for key, val := range map[string]string{"accept_ra": "0", "accept_dad": "0"} {
		if err := sysctl.Set(sysctl.PathOf("net", "ipv6", "conf", c.Name, key), val); err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, err
		}
	}
	return lookup(c.Name)
}

func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("generating MAC: %w", err)
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac, nil
}

// EnsureAddr puts addr (the gateway with the subnet's prefix) on the bridge.
// A different IPv4 address, or an IPv6 address in an overlapping subnet,
// is an error unless force is set, in which case it is replaced: a bridge
// serves one subnet per family.
func EnsureAddr(br netlink.Link, addr *net.IPNet, force bool) error {
	family := netlink.FAMILY_V4
	if addr.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlinksafe.AddrList(br, family)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", br.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(addr.IP) && a.Mask.String() == addr.Mask.String() {
			return nil
		}
		if family == netlink.FAMILY_V6 && (a.IP.IsLinkLocalUnicast() || !(a.Contains(addr.IP) || addr.Contains(a.IP))) {
			continue
		}
		if !force {
			return fmt.Errorf("bridge %s already has address %s, different from %s (set forceAddress to replace it)", br.Attrs().Name, a.IPNet, addr)
		}
		if err := netlink.AddrDel(br, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing %s from %s: %w", a.IPNet, br.Attrs().Name, err)
		}
	}
	a := &netlink.Addr{IPNet: addr}
	if family == netlink.FAMILY_V6 {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(br, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding %s to %s: %w", addr, br.Attrs().Name, err)
	}
	return nil
}

// Port describes how a host veth is attached.
type Port struct {
	Hairpin  bool
	Isolated bool
	// Vlan, when non-zero, makes the port an untagged access port of that
	// VLAN; PreserveDefaultVlan keeps VLAN 1 on it too.
	Vlan                int
	PreserveDefaultVlan bool
}

// Attach enslaves port to br with the given settings and brings it up.
func Attach(br netlink.Link, port netlink.Link, p Port) error {
	name := port.Attrs().Name
	if err := netlink.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("attaching %s to %s: %w", name, br.Attrs().Name, err)
	}
	if p.Hairpin {
		if err := netlink.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("setting hairpin on %s: %w", name, err)
		}
	}
	if p.Isolated {
		if err := netlink.LinkSetIsolated(port, true); err != nil {
			return fmt.Errorf("isolating %s: %w", name, err)
		}
	}
	if p.Vlan != 0 {
		if !p.PreserveDefaultVlan {
			if err := netlink.BridgeVlanDel(port, 1, true, true, false, true); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("removing default vlan from %s: %w", name, err)
			}
		}
		if err := netlink.BridgeVlanAdd(port, uint16(p.Vlan), true, true, false, true); err != nil {
			return fmt.Errorf("adding vlan %d to %s: %w", p.Vlan, name, err)
		}
	}
	if err := netlink.LinkSetUp(port); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// ErrNotForwarding is returned by WaitForwarding when a port did not come
// up in time; the condition is transient, so callers report it as
// try-again.
var ErrNotForwarding = errors.New("bridge port not forwarding")

// WaitForwarding waits until the port is operationally up. A bridge without
// STP moves a port to forwarding in the same kernel event that raises its
// carrier, so operstate up means frames flow.
func WaitForwarding(name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	wait := 500 * time.Microsecond
	for {
		l, err := netlinksafe.LinkByName(name)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is %s after %s: %w", name, l.Attrs().OperState, timeout, ErrNotForwarding)
		}
		time.Sleep(wait)
		if wait < 50*time.Millisecond {
			wait *= 2
		}
	}
}

// EnableForwarding turns on IP forwarding in the current netns for the
// families used, so routed and masqueraded traffic leaves the bridge.
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := sysctl.Ensure(sysctl.Path("net.ipv4.ip_forward"), "1"); err != nil {
			return err
		}
	}
	if v6 {
		if err := sysctl.Ensure(sysctl.Path("net.ipv6.conf.all.forwarding"), "1"); err != nil {
			return err
		}
	}
	return nil
}

// DefaultRouteMTU returns the MTU of the interface holding the current
// netns's default route (IPv4 first, then IPv6), or 0 when there is none.
// Containers get it so they fit the host's uplink (overlay and jumbo hosts
// differ from 1500).
func DefaultRouteMTU() (int, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return 0, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 {
				continue
			}
			l, err := netlink.LinkByIndex(idx)
			if err != nil {
				return 0, fmt.Errorf("looking up default route interface: %w", err)
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, nil
}
