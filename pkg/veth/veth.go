// Package veth creates the veth pair that links a container to its host and
// configures the container end: name, MAC, MTU, addresses, routes and the
// per-interface sysctls that decide how fast it becomes usable.
package veth

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/sysctl"
)

// HostName returns the host-side name of an attachment's veth. It is derived
// from the attachment, not random, so that DEL and GC can find the link from
// the container ID and interface name alone.
func HostName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifName))
	return "veth" + hex.EncodeToString(sum[:4])
}

// Create makes a veth pair whose host end is named host in the current
// netns and whose peer is created directly inside contNS as cont, so the
// container never sees a temporary name and no move is needed. An existing
// interface named cont in the container makes it fail with EEXIST.
func Create(host, cont string, contNS ns.NetNS, mtu int, contMAC net.HardwareAddr) (netlink.Link, error) {
	v := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: host, MTU: mtu, TxQLen: -1},
		PeerName:         cont,
		PeerNamespace:    netlink.NsFd(int(contNS.Fd())),
		PeerHardwareAddr: contMAC,
	}
	if mtu > 0 {
		v.PeerMTU = uint32(mtu)
	}
	if err := netlink.LinkAdd(v); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating veth %s/%s: an interface named %s or %s already exists: %w", host, cont, host, cont, err)
		}
		return nil, fmt.Errorf("creating veth %s with peer %s in %s: %w", host, cont, contNS.Path(), err)
	}
	l, err := netlinksafe.LinkByName(host)
	if err != nil {
		return nil, fmt.Errorf("looking up new veth %s: %w", host, err)
	}
	return l, nil
}

// Delete removes a pair by its host end. A missing link is not an error,
// which makes DEL idempotent. Nor is a pair whose container end is in a
// network namespace on its way out (the runtime released it before DEL):
// the kernel is removing that pair with the namespace, and deleting it
// here would only wait, with the RTNL lock, for the same RCU grace periods
// (tens of milliseconds) that its own cleanup waits for in the background.
func Delete(host string) error {
	l, err := netlinksafe.LinkByName(host)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("looking up %s: %w", host, err)
	}
	if PeerNetnsDying(l) {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("deleting %s: %w", host, err)
	}
	return nil
}

// DeleteIn removes the interface ifName inside contNS, for pairs whose host
// end is unknown. A missing interface is not an error.
func DeleteIn(contNS ns.NetNS, ifName string) error {
	return contNS.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return fmt.Errorf("looking up %s: %w", ifName, err)
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting %s: %w", ifName, err)
		}
		return nil
	})
}

// nsidNotAssigned is NETNSA_NSID_NOT_ASSIGNED (-1) as the netlink library
// decodes IFLA_LINK_NETNSID: unsigned. It leaves the attribute out, which
// it reports as -1, when the peer is in the link's own namespace.
const nsidNotAssigned = 1<<32 - 1

// PeerNetnsDying reports whether l's peer lives in another network
// namespace that is being destroyed. The kernel names a live peer
// namespace by an id, allocating one if needed, and a dying one it can no
// longer take a reference on as not assigned. Right after the last
// reference went, the old id may still be reported: the pair is then
// deleted as any other, which is correct, only slower.
func PeerNetnsDying(l netlink.Link) bool {
	return l.Attrs().NetNsID == nsidNotAssigned
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// Config describes the container end of a pair.
type Config struct {
	IfName string
	// Addrs are the interface's addresses with their prefix length.
	Addrs []*net.IPNet
	// Routes are added through the interface; a route without GW uses
	// Gateways for its family when it is a default route, else it is
	// on-link.
	Routes   []*types.Route
	Gateway4 net.IP
	Gateway6 net.IP
	// EnableDAD keeps IPv6 duplicate address detection on; it is off by
	// default because it delays a container's first packets by seconds.
	EnableDAD bool
}

// Configure brings the container end up with its addresses and routes and
// returns its MAC address. It runs inside contNS on a locked thread because
// the sysctls it writes belong to the namespace of the writing thread.
func Configure(contNS ns.NetNS, c Config) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := contNS.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(c.IfName)
		if err != nil {
			return fmt.Errorf("looking up %s: %w", c.IfName, err)
		}
		mac = l.Attrs().HardwareAddr
		if err := interfaceSysctls(c); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("setting %s up: %w", c.IfName, err)
		}
		for _, a := range c.Addrs {
			addr := &netlink.Addr{IPNet: a}
			if a.IP.To4() == nil && !c.EnableDAD {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("adding address %s to %s: %w", a, c.IfName, err)
			}
		}
		if c.EnableDAD {
			if err := settle(l, 5*time.Second); err != nil {
				return err
			}
		}
		for _, r := range c.Routes {
			if err := addRoute(l, r, c); err != nil {
				return err
			}
		}
		return nil
	})
	return mac, err
}

func interfaceSysctls(c Config) error {
	hasV6 := false
	for _, a := range c.Addrs {
		if a.IP.To4() == nil {
			hasV6 = true
		}
	}
	if hasV6 {
		// A container netns may come with IPv6 disabled on its interfaces;
		// an IPv6 address needs it on.
		for _, dev := range []string{"lo", c.IfName} {
			if err := sysctl.Ensure(sysctl.PathOf("net", "ipv6", "conf", dev, "disable_ipv6"), "0"); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
		dad := "0"
		if c.EnableDAD {
			dad = "1"
			if err := sysctl.Set(sysctl.PathOf("net", "ipv6", "conf", c.IfName, "enhanced_dad"), "1"); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
		if err := sysctl.Set(sysctl.PathOf("net", "ipv6", "conf", c.IfName, "accept_dad"), dad); err != nil {
			return err
		}
	}
	// Announce the new address at once so neighbours replace stale ARP
	// entries for a reused IP.
	return sysctl.Set(sysctl.PathOf("net", "ipv4", "conf", c.IfName, "arp_notify"), "1")
}

func addRoute(l netlink.Link, r *types.Route, c Config) error {
	dst := r.Dst
	route := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &dst,
		Gw:        r.GW,
		MTU:       r.MTU,
		AdvMSS:    r.AdvMSS,
		Priority:  r.Priority,
	}
	if r.Table != nil {
		route.Table = *r.Table
	}
	if route.Gw == nil {
		ones, _ := dst.Mask.Size()
		if ones == 0 {
			route.Gw = c.Gateway4
			if dst.IP.To4() == nil {
				route.Gw = c.Gateway6
			}
		}
		if route.Gw == nil {
			route.Scope = netlink.SCOPE_LINK
		}
	}
	if r.Scope != nil {
		route.Scope = netlink.Scope(*r.Scope)
	}
	if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding route %s via %v on %s: %w", dst.String(), route.Gw, c.IfName, err)
	}
	return nil
}

// settle waits for IPv6 duplicate address detection to finish, so the
// addresses are usable when ADD returns.
func settle(l netlink.Link, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
		}
		tentative := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("duplicate address detection failed for %s", a.IPNet)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = true
			}
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("addresses of %s still tentative after %s", l.Attrs().Name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
