package harness

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The sandbox host's uplink, the same layout as /work/shared/tools/sandbox-host. The addresses
// exist only inside the host/ext namespace pair, so every pair can reuse them.
const (
	UplinkName    = "up0"
	UplinkPeer    = "up1"
	UplinkMTU     = 1400
	HostUplinkIP  = "10.97.0.1"
	ExtUplinkIP   = "10.97.0.2"
	uplinkLen     = 24
	containerName = "c"
)

// Host is a throw-away netns standing in for a machine's root netns: lo up and an uplink up0
// (HostUplinkIP/24, MTU 1400) to Ext, a netns standing in for the outside world (ExtUplinkIP),
// with the default route via Ext. Plugins under test run here, never in the real root netns.
type Host struct {
	*NetNS
	Ext *NetNS

	id         string
	containers atomic.Int64
}

// NewHost creates a Host whose namespaces, and the containers made by NewContainer, are deleted
// when the test ends.
func NewHost(t testing.TB) *Host {
	t.Helper()
	RequireRoot(t)
	h, err := CreateHost()
	if err != nil {
		t.Fatalf("creating sandbox host: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("removing sandbox host: %v", err)
		}
	})
	return h
}

// CreateHost is NewHost for callers without a testing.TB; the caller must Close it.
func CreateHost() (h *Host, err error) {
	id := randomID()
	made := &Host{id: id}
	defer func() {
		if err != nil {
			err = errors.Join(err, made.Close())
		}
	}()
	if made.NetNS, err = createNamedNetNS(NamePrefix + id + "-host"); err != nil {
		return nil, err
	}
	if made.Ext, err = createNamedNetNS(NamePrefix + id + "-ext"); err != nil {
		return nil, err
	}
	if err := made.wireUplink(); err != nil {
		return nil, err
	}
	return made, nil
}

func (h *Host) wireUplink() error {
	hostNl, closeHost, err := netlinkAt(h.NetNS)
	if err != nil {
		return err
	}
	defer closeHost()
	extNl, closeExt, err := netlinkAt(h.Ext)
	if err != nil {
		return err
	}
	defer closeExt()

	extFd, err := netns.GetFromPath(h.Ext.Path())
	if err != nil {
		return fmt.Errorf("opening netns %s: %w", h.Ext.Name(), err)
	}
	defer extFd.Close()

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: UplinkName, MTU: UplinkMTU},
		PeerName:      UplinkPeer,
		PeerMTU:       UplinkMTU,
		PeerNamespace: netlink.NsFd(extFd),
	}
	if err := hostNl.LinkAdd(veth); err != nil {
		return fmt.Errorf("adding uplink %s in %s: %w", UplinkName, h.Name(), err)
	}
	if err := configureUplinkEnd(hostNl, UplinkName, HostUplinkIP); err != nil {
		return fmt.Errorf("in %s: %w", h.Name(), err)
	}
	if err := configureUplinkEnd(extNl, UplinkPeer, ExtUplinkIP); err != nil {
		return fmt.Errorf("in %s: %w", h.Ext.Name(), err)
	}
	for _, nl := range []*netlink.Handle{hostNl, extNl} {
		if err := setLinkUp(nl, "lo"); err != nil {
			return err
		}
	}
	up, err := hostNl.LinkByName(UplinkName)
	if err != nil {
		return fmt.Errorf("finding %s in %s: %w", UplinkName, h.Name(), err)
	}
	route := &netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP(ExtUplinkIP)}
	if err := hostNl.RouteAdd(route); err != nil {
		return fmt.Errorf("adding default route via %s in %s: %w", ExtUplinkIP, h.Name(), err)
	}
	return nil
}

func configureUplinkEnd(nl *netlink.Handle, name, ip string) error {
	link, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(uplinkLen, 32)}}
	if err := nl.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", addr, name, err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}

// NewContainer creates an empty container netns (only lo, up) that is deleted when the test ends.
// Its name shares the host's id, so `ip netns list` groups a test's namespaces.
func (h *Host) NewContainer(t testing.TB) *NetNS {
	t.Helper()
	c, err := h.CreateContainer()
	if err != nil {
		t.Fatalf("creating container netns: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("removing container netns %s: %v", c.Name(), err)
		}
	})
	return c
}

// CreateContainer is NewContainer for callers without a testing.TB; the caller must Close it.
func (h *Host) CreateContainer() (*NetNS, error) {
	name := fmt.Sprintf("%s%s-%s%d", NamePrefix, h.id, containerName, h.containers.Add(1))
	c, err := createNamedNetNS(name)
	if err != nil {
		return nil, err
	}
	nl, closeNl, err := netlinkAt(c)
	if err == nil {
		err = setLinkUp(nl, "lo")
		closeNl()
	}
	if err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// Close deletes the host and ext namespaces (and with them the uplink and anything plugins made
// there). Containers are owned by whoever created them.
func (h *Host) Close() error {
	var errs []error
	if h.NetNS != nil {
		errs = append(errs, h.NetNS.Close())
	}
	if h.Ext != nil {
		errs = append(errs, h.Ext.Close())
	}
	return errors.Join(errs...)
}

// netlinkAt returns a netlink handle bound to n's namespace, so no thread has to switch into it.
func netlinkAt(n *NetNS) (*netlink.Handle, func(), error) {
	fd, err := netns.GetFromPath(n.Path())
	if err != nil {
		return nil, nil, fmt.Errorf("opening netns %s: %w", n.Name(), err)
	}
	defer fd.Close()
	nl, err := netlink.NewHandleAt(fd)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink handle in %s: %w", n.Name(), err)
	}
	return nl, nl.Close, nil
}

func setLinkUp(nl *netlink.Handle, name string) error {
	link, err := nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("finding %s: %w", name, err)
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("setting %s up: %w", name, err)
	}
	return nil
}
