package cninet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultBridge is the embedded network's bridge.
const DefaultBridge = "nsnet0"

// firstSubnet and lastSubnet bound the embedded network's candidate
// subnets, 10.88.0.0/16, 10.89.0.0/16, ... (podman's default first).
var (
	firstSubnet = netip.MustParsePrefix("10.88.0.0/16")
	lastSubnet  = netip.MustParsePrefix("10.255.0.0/16")
)

// Embedded returns nsnet's built-in default network list: bridge-lite on
// DefaultBridge with in-process host-local IPAM, masquerade and a default
// route, then portmap-lite; state under stateRoot. Its subnet is the one
// DefaultBridge already has, else the first candidate that overlaps no
// route or address of the current netns.
func Embedded(stateRoot string) (*libcni.NetworkConfigList, error) {
	subnet, err := embeddedSubnet()
	if err != nil {
		return nil, fmt.Errorf("choosing a subnet for the built-in network %s: %w", DefaultNetwork, err)
	}
	list, err := libcni.ConfListFromBytes(embeddedConfList(subnet, stateRoot))
	if err != nil {
		return nil, fmt.Errorf("built-in network %s: %w", DefaultNetwork, err)
	}
	return list, nil
}

func embeddedConfList(subnet netip.Prefix, stateRoot string) []byte {
	conf := map[string]any{
		"cniVersion":  "1.1.0",
		"cniVersions": []string{"1.0.0", "1.1.0"},
		"name":        DefaultNetwork,
		"plugins": []map[string]any{
			{
				"type":             "bridge-lite",
				"bridge":           DefaultBridge,
				"isGateway":        true,
				"isDefaultGateway": true,
				"ipMasq":           true,
				"hairpinMode":      true,
				"capabilities":     map[string]bool{"ips": true, "mac": true},
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": subnet.String()}}},
					"dataDir": filepath.Join(stateRoot, "ipam"),
				},
				"stateDir": filepath.Join(stateRoot, "bridge-lite"),
			},
			{
				"type":         "portmap-lite",
				"capabilities": map[string]bool{"portMappings": true},
				"stateDir":     filepath.Join(stateRoot, "portmap-lite"),
			},
		},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		panic(fmt.Sprintf("encoding the built-in conflist: %v", err))
	}
	return b
}

// embeddedSubnet keeps the subnet the bridge already serves, so every
// container of the network shares one subnet even though the bridge's own
// route overlaps it, and otherwise picks a free one.
func embeddedSubnet() (netip.Prefix, error) {
	if p, ok, err := bridgeSubnet(DefaultBridge); err != nil || ok {
		return p, err
	}
	used, err := usedPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	return chooseSubnet(used)
}

// chooseSubnet returns the first candidate that overlaps none of used.
func chooseSubnet(used []netip.Prefix) (netip.Prefix, error) {
	for p := firstSubnet; ; {
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
		if p == lastSubnet {
			return netip.Prefix{}, fmt.Errorf("every subnet from %s to %s overlaps a route or address; define the network %s in a conflist",
				firstSubnet, lastSubnet, DefaultNetwork)
		}
		a := p.Addr().As4()
		a[1]++
		p = netip.PrefixFrom(netip.AddrFrom4(a), p.Bits())
	}
}

func bridgeSubnet(name string) (netip.Prefix, bool, error) {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return netip.Prefix{}, false, nil
	}
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			return p, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}

// usedPrefixes lists the IPv4 prefixes of the current netns's routes in
// every table (policy routing, VPNs) and of its addresses. Default routes
// are left out: they overlap everything.
func usedPrefixes() ([]netip.Prefix, error) {
	var routes []netlink.Route
	var err error
	// A dump racing with route changes is interrupted; a retry is complete.
	for range 5 {
		routes, err = netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	var used []netip.Prefix
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			used = append(used, p)
		}
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			used = append(used, p)
		}
	}
	return used, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones).Masked(), true
}
