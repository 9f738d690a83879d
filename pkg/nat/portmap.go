package nat

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// PortMapping publishes one host port to one container address and port.
type PortMapping struct {
	Protocol      string // "tcp", "udp" or "sctp"
	HostIP        net.IP // nil or unspecified = every local address of the family
	HostPort      int    // 1..65535
	ContainerIP   net.IP // IPv4 or IPv6; HostIP (if set) has the same family
	ContainerPort int    // 1..65535
	// ContainerSubnet is the container's subnet: clients from it reaching the container through a
	// published port (hairpin, including the container itself) are masqueraded so replies come back through the host.
	ContainerSubnet *net.IPNet
}

// ConflictError reports a host port already published to another target.
type ConflictError struct {
	Mapping  PortMapping // the mapping that could not be added
	Existing string      // the current target, e.g. "10.88.0.7:80"
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("cannot publish %s: host port already published to %s", describeMapping(e.Mapping), e.Existing)
}

// PortMapper publishes and withdraws port mappings in the CALLER'S CURRENT netns.
//
// A published port is identified by its key: address family (that of ContainerIP), protocol,
// host IP (or none) and host port. A key with a host IP takes precedence over the same
// protocol and port without one, for traffic to that address.
type PortMapper interface {
	Backend() string
	// Add publishes all mappings in one atomic step (nftables: one transaction): all or none.
	// Idempotent for mappings already published to the same target. A key (protocol, hostIP, hostPort)
	// already published to a different target fails with *ConflictError and changes nothing.
	Add(ms []PortMapping) error
	// Del withdraws the mappings whose current target still equals the given one (so a late DEL of a replaced
	// container never removes its successor's mapping); missing ones are not errors; removes the table/chains when nothing is left.
	Del(ms []PortMapping) error
	// Check returns nil when every mapping is published to its target, else an error naming what is missing.
	Check(ms []PortMapping) error
	// List returns every published mapping (for conflict reports, GC and leak tests).
	List() ([]PortMapping, error)
}

// NewPortMapper returns the backend by name: "nftables", "iptables", or "" for auto (the same
// rule as NewMasquerader: nftables when it answers in the caller's current netns, else iptables).
// Like a Masquerader, the value holds no namespace-bound state.
func NewPortMapper(backend string) (PortMapper, error) {
	switch backend {
	case BackendNftables:
		return nftPortMapper{}, nil
	case BackendIptables:
		return newIptPortMapper()
	case "":
		nftErr := nftAvailable()
		if nftErr == nil {
			return nftPortMapper{}, nil
		}
		p, err := newIptPortMapper()
		if err != nil {
			return nil, fmt.Errorf("no port mapping backend: nftables: %v; iptables: %w", nftErr, err)
		}
		return p, nil
	default:
		return nil, fmt.Errorf("unknown port mapping backend %q (want %q, %q or empty for auto)", backend, BackendNftables, BackendIptables)
	}
}

// pmProtocols maps the accepted protocol names to IP protocol numbers.
var pmProtocols = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

func pmProtoName(p uint8) string {
	for name, n := range pmProtocols {
		if n == p {
			return name
		}
	}
	return fmt.Sprintf("proto-%d", p)
}

// pmKey identifies a published host port.
type pmKey struct {
	v6     bool
	proto  uint8
	hostIP netip.Addr // invalid: every local address
	port   uint16
}

func (k pmKey) String() string {
	host := k.hostIP
	if !host.IsValid() {
		host = netip.IPv4Unspecified()
		if k.v6 {
			host = netip.IPv6Unspecified()
		}
	}
	return pmProtoName(k.proto) + " " + netip.AddrPortFrom(host, k.port).String()
}

// pmEntry is a validated PortMapping in the form the backends work with.
type pmEntry struct {
	key    pmKey
	target netip.AddrPort // container address (unmapped) and port
	subnet netip.Prefix   // masked, same family as the target
	orig   PortMapping    // as the caller gave it, for a ConflictError
}

func (e pmEntry) String() string { return e.key.String() + " -> " + e.target.String() }

func (e pmEntry) mapping() PortMapping {
	m := PortMapping{
		Protocol:      pmProtoName(e.key.proto),
		HostPort:      int(e.key.port),
		ContainerIP:   net.IP(e.target.Addr().AsSlice()),
		ContainerPort: int(e.target.Port()),
	}
	if e.key.hostIP.IsValid() {
		m.HostIP = net.IP(e.key.hostIP.AsSlice())
	}
	if e.subnet.IsValid() {
		m.ContainerSubnet = &net.IPNet{IP: net.IP(e.subnet.Addr().AsSlice()), Mask: net.CIDRMask(e.subnet.Bits(), e.subnet.Addr().BitLen())}
	}
	return m
}

// describeMapping renders a mapping that may not be valid, for error messages.
func describeMapping(m PortMapping) string {
	host := "*"
	if len(m.HostIP) > 0 {
		host = m.HostIP.String()
	}
	return fmt.Sprintf("%s %s -> %s", m.Protocol, net.JoinHostPort(host, fmt.Sprint(m.HostPort)),
		net.JoinHostPort(m.ContainerIP.String(), fmt.Sprint(m.ContainerPort)))
}

func pmPort(what string, p int) (uint16, error) {
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("%s %d out of range 1..65535", what, p)
	}
	return uint16(p), nil
}

func (m PortMapping) normalize() (pmEntry, error) {
	var e pmEntry
	proto, ok := pmProtocols[m.Protocol]
	if !ok {
		return e, fmt.Errorf("port mapping %s: protocol %q is not one of tcp, udp, sctp (lowercase)", describeMapping(m), m.Protocol)
	}
	hostPort, err := pmPort("host port", m.HostPort)
	if err != nil {
		return e, fmt.Errorf("port mapping %s: %w", describeMapping(m), err)
	}
	ctrPort, err := pmPort("container port", m.ContainerPort)
	if err != nil {
		return e, fmt.Errorf("port mapping %s: %w", describeMapping(m), err)
	}
	ctrIP, ok := netip.AddrFromSlice(m.ContainerIP)
	if !ok || ctrIP.Unmap().IsUnspecified() {
		return e, fmt.Errorf("port mapping %s: invalid container IP %q", describeMapping(m), m.ContainerIP)
	}
	ctrIP = ctrIP.Unmap()
	var hostIP netip.Addr
	if len(m.HostIP) > 0 {
		a, ok := netip.AddrFromSlice(m.HostIP)
		if !ok {
			return e, fmt.Errorf("port mapping %s: invalid host IP %q", describeMapping(m), m.HostIP)
		}
		a = a.Unmap()
		if a.Is4() != ctrIP.Is4() {
			return e, fmt.Errorf("port mapping %s: host IP and container IP are of different families", describeMapping(m))
		}
		if !a.IsUnspecified() {
			hostIP = a
		}
	}
	if m.ContainerSubnet == nil {
		return e, fmt.Errorf("port mapping %s: no container subnet", describeMapping(m))
	}
	subnet, err := prefixFromIPNet(m.ContainerSubnet)
	if err != nil {
		return e, fmt.Errorf("port mapping %s: container subnet: %w", describeMapping(m), err)
	}
	if !subnet.Contains(ctrIP) {
		return e, fmt.Errorf("port mapping %s: container IP outside its subnet %s", describeMapping(m), subnet)
	}
	return pmEntry{
		key:    pmKey{v6: ctrIP.Is6(), proto: proto, hostIP: hostIP, port: hostPort},
		target: netip.AddrPortFrom(ctrIP, ctrPort),
		subnet: subnet,
		orig:   m,
	}, nil
}

// normalizeMappings validates a batch: the same key twice must have the same target, and a
// container address one subnet. Exact duplicates are dropped.
func normalizeMappings(ms []PortMapping) ([]pmEntry, error) {
	var es []pmEntry
	byKey := map[pmKey]pmEntry{}
	subnets := map[netip.Addr]netip.Prefix{}
	for _, m := range ms {
		e, err := m.normalize()
		if err != nil {
			return nil, err
		}
		if prev, ok := byKey[e.key]; ok {
			if prev.target != e.target {
				return nil, fmt.Errorf("port mappings %s and %s publish the same host port", prev, e)
			}
		}
		if s, ok := subnets[e.target.Addr()]; ok && s != e.subnet {
			return nil, fmt.Errorf("port mappings for %s give two subnets, %s and %s", e.target.Addr(), s, e.subnet)
		}
		subnets[e.target.Addr()] = e.subnet
		if _, ok := byKey[e.key]; !ok {
			byKey[e.key] = e
			es = append(es, e)
		}
	}
	return es, nil
}

// sortMappings orders List output: IPv4 first, then by protocol, host port and host IP.
func sortMappings(es []pmEntry) []PortMapping {
	slices.SortFunc(es, func(a, b pmEntry) int {
		switch {
		case a.key.v6 != b.key.v6:
			if a.key.v6 {
				return 1
			}
			return -1
		case a.key.proto != b.key.proto:
			return int(a.key.proto) - int(b.key.proto)
		case a.key.port != b.key.port:
			return int(a.key.port) - int(b.key.port)
		default:
			return a.key.hostIP.Compare(b.key.hostIP)
		}
	})
	out := make([]PortMapping, 0, len(es))
	for _, e := range es {
		out = append(out, e.mapping())
	}
	return out
}

// pmMissingError lists what Check found missing.
func pmMissingError(backend string, missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s port mappings are incomplete: %s", backend, strings.Join(missing, "; "))
}
