package nat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Backend names accepted by NewMasquerader and Available.
const (
	BackendNftables = "nftables"
	BackendIptables = "iptables"
)

// MasqEntry is one container address whose outbound traffic is masqueraded.
type MasqEntry struct {
	Network string     // CNI network name (matches ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$, may be long): groups entries
	Subnet  *net.IPNet // the container's subnet: traffic to it is not masqueraded (nor to multicast 224.0.0.0/4, ff00::/8)
	IP      net.IP     // the container address (IPv4 or IPv6)
}

// Masquerader installs and removes masquerade entries in the CALLER'S CURRENT network namespace
// (the caller locks the OS thread and switches netns). Callers serialise Add/Del calls on one netns themselves
// (the plugin holds a file lock), but the design must not break if two processes race (atomic transactions, EEXIST/ENOENT tolerated).
type Masquerader interface {
	Backend() string                          // "nftables" or "iptables"
	Add(e MasqEntry) error                    // idempotent; creates the shared per-network structure on first use; one atomic transaction (nft)
	Del(e MasqEntry) error                    // idempotent; missing pieces are not errors; removes the per-network structure when its last entry goes
	Check(e MasqEntry) error                  // nil if the entry is fully in place; else an error saying what is missing
	Entries(network string) ([]net.IP, error) // the IPs currently masqueraded for that network (for GC/leak tests)
}

// NewMasquerader returns the backend by name: "nftables", "iptables", or "" for auto (nftables
// when the kernel answers nftables netlink requests in the caller's current netns, else
// iptables). Unknown name -> error.
//
// The returned value opens its netlink sockets (or runs iptables) lazily on every call, in the
// netns of the calling thread at that moment; only the auto-detection looks at the netns
// current when NewMasquerader runs.
func NewMasquerader(backend string) (Masquerader, error) {
	switch backend {
	case BackendNftables:
		return &nftMasq{}, nil
	case BackendIptables:
		m, err := newIptMasq()
		if err != nil {
			return nil, err
		}
		return m, nil
	case "":
		nftErr := nftAvailable()
		if nftErr == nil {
			return &nftMasq{}, nil
		}
		m, err := newIptMasq()
		if err != nil {
			return nil, fmt.Errorf("no masquerade backend: nftables: %v; iptables: %w", nftErr, err)
		}
		return m, nil
	default:
		return nil, fmt.Errorf("unknown masquerade backend %q (want %q, %q or empty for auto)", backend, BackendNftables, BackendIptables)
	}
}

// Available reports whether the named backend ("" = auto) can be used here (for CNI STATUS).
// It only reads: nftables is probed with a table listing in the caller's netns, iptables by
// finding the binaries and their version.
func Available(backend string) error {
	switch backend {
	case BackendNftables:
		return nftAvailable()
	case BackendIptables:
		_, err := newIptMasq()
		return err
	case "":
		nftErr := nftAvailable()
		if nftErr == nil {
			return nil
		}
		if _, err := newIptMasq(); err != nil {
			return fmt.Errorf("no masquerade backend: nftables: %v; iptables: %w", nftErr, err)
		}
		return nil
	default:
		return fmt.Errorf("unknown masquerade backend %q (want %q, %q or empty for auto)", backend, BackendNftables, BackendIptables)
	}
}

var networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// entry is a validated MasqEntry in the form the backends work with.
type entry struct {
	network string
	ip      netip.Addr   // unmapped: an IPv4 address is always 4 bytes
	subnet  netip.Prefix // masked, same family as ip
}

func (e entry) v6() bool { return e.ip.Is6() }

func (e entry) String() string {
	return fmt.Sprintf("%s (network %s, subnet %s)", e.ip, e.network, e.subnet)
}

func checkNetwork(name string) error {
	if !networkNameRE.MatchString(name) {
		return fmt.Errorf("invalid network name %q: must match %s", name, networkNameRE)
	}
	return nil
}

// normalize validates e; it accepts a Subnet that carries the container address rather than
// the network address (as a CNI result's "address" does) and masks it.
func (e MasqEntry) normalize() (entry, error) {
	if err := checkNetwork(e.Network); err != nil {
		return entry{}, fmt.Errorf("masquerade entry: %w", err)
	}
	ip, ok := netip.AddrFromSlice(e.IP)
	if !ok {
		return entry{}, fmt.Errorf("masquerade entry for network %s: invalid IP %q", e.Network, e.IP)
	}
	ip = ip.Unmap()
	if e.Subnet == nil {
		return entry{}, fmt.Errorf("masquerade entry %s: no subnet", ip)
	}
	subnet, err := prefixFromIPNet(e.Subnet)
	if err != nil {
		return entry{}, fmt.Errorf("masquerade entry %s: %w", ip, err)
	}
	if !subnet.Contains(ip) {
		return entry{}, fmt.Errorf("masquerade entry %s: address outside its subnet %s", ip, subnet)
	}
	return entry{network: e.Network, ip: ip, subnet: subnet}, nil
}

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, error) {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("invalid subnet address %q", n.IP)
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, fmt.Errorf("invalid subnet mask %s", n.Mask)
	}
	if addr.Is4In6() {
		addr = addr.Unmap()
		if bits == 128 {
			if ones < 96 {
				return netip.Prefix{}, fmt.Errorf("invalid subnet %s: IPv4 address with a %d-bit IPv6 mask", n, ones)
			}
			ones -= 96
			bits = 32
		}
	}
	if addr.BitLen() != bits {
		return netip.Prefix{}, fmt.Errorf("invalid subnet %s: address and mask families differ", n)
	}
	return netip.PrefixFrom(addr, ones).Masked(), nil
}

// netHash names a network in chain and set names, which are too short for a CNI network name.
// 32 bits keep a collision between the few networks of one host unlikely; the full name sits
// in comments, and Add refuses to share a structure with a different name.
func netHash(network string) string {
	sum := sha256.Sum256([]byte(network))
	return hex.EncodeToString(sum[:4])
}

// famTag is "4" or "6", as used in set names.
func famTag(v6 bool) string {
	if v6 {
		return "6"
	}
	return "4"
}

// commentName returns the network name cut so that prefix+name fits into max bytes; the cut
// is marked so that nobody mistakes it for the full name.
func commentName(prefix, network string, max int) string {
	if len(prefix)+len(network) <= max {
		return prefix + network
	}
	const mark = "..."
	return prefix + network[:max-len(prefix)-len(mark)] + mark
}

func multicastPrefix(v6 bool) netip.Prefix {
	if v6 {
		return netip.MustParsePrefix("ff00::/8")
	}
	return netip.MustParsePrefix("224.0.0.0/4")
}

// coverPrefixes returns the smallest list of prefixes covering the same addresses as ps,
// sorted by address: duplicates and prefixes inside another one are dropped. The results never
// overlap, which an nftables interval set requires.
func coverPrefixes(ps []netip.Prefix) []netip.Prefix {
	sorted := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		sorted = append(sorted, p.Masked())
	}
	// Wider prefixes first, so that a prefix is only kept when no kept one contains it.
	slices.SortFunc(sorted, func(a, b netip.Prefix) int {
		if a.Bits() != b.Bits() {
			return a.Bits() - b.Bits()
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range sorted {
		if !slices.ContainsFunc(out, p.Overlaps) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		netBits := min(max(p.Bits()-i*8, 0), 8)
		b[i] |= byte(0xff >> netBits)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// missingError lists what Check found missing.
func missingError(backend string, e entry, missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s masquerade for %s is incomplete: %s", backend, e, strings.Join(missing, "; "))
}
