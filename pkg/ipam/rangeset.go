package ipam

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// rangeJSON is one range as written in the config.
type rangeJSON struct {
	Subnet     string `json:"subnet,omitempty"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

// ipRange is a validated pool: start..end (inclusive) lies inside subnet.
type ipRange struct {
	subnet    netip.Prefix
	start     netip.Addr
	end       netip.Addr
	gateway   netip.Addr
	broadcast netip.Addr // invalid for IPv6
	narrowed  bool       // start or end differs from the subnet's default
}

// rangeSet is a pool of disjoint ranges of one family; one address is
// allocated per set.
type rangeSet []ipRange

func parseAddr(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s %q is not an IP address", what, s)
	}
	return a.Unmap(), nil
}

func newRange(j rangeJSON) (ipRange, error) {
	if j.Subnet == "" {
		return ipRange{}, fmt.Errorf(`range has no "subnet"`)
	}
	subnet, err := netip.ParsePrefix(j.Subnet)
	if err != nil {
		return ipRange{}, fmt.Errorf("subnet %q is not a CIDR", j.Subnet)
	}
	if subnet.Addr().Is4In6() {
		return ipRange{}, fmt.Errorf("subnet %s: IPv4-mapped IPv6 subnets are not supported", subnet)
	}
	bits := subnet.Addr().BitLen()
	if subnet.Bits() > bits-2 {
		return ipRange{}, fmt.Errorf("subnet %s is too small to allocate from", subnet)
	}
	if m := subnet.Masked(); m != subnet {
		return ipRange{}, fmt.Errorf("subnet %s has host bits set; for a /%d the network address is %s", subnet, subnet.Bits(), m.Addr())
	}
	r := ipRange{subnet: subnet, start: subnet.Addr().Next(), end: lastAddr(subnet)}
	if subnet.Addr().Is4() {
		r.broadcast = r.end
		r.end = r.end.Prev()
	}
	r.gateway = r.start
	inSubnet := func(what, s string) (netip.Addr, error) {
		a, err := parseAddr(what, s)
		if err != nil {
			return a, err
		}
		if !subnet.Contains(a) {
			return a, fmt.Errorf("%s %s is not in subnet %s", what, a, subnet)
		}
		return a, nil
	}
	if j.Gateway != "" {
		if r.gateway, err = inSubnet("gateway", j.Gateway); err != nil {
			return ipRange{}, err
		}
	}
	if j.RangeStart != "" {
		if r.start, err = inSubnet("rangeStart", j.RangeStart); err != nil {
			return ipRange{}, err
		}
		r.narrowed = true
	}
	if j.RangeEnd != "" {
		if r.end, err = inSubnet("rangeEnd", j.RangeEnd); err != nil {
			return ipRange{}, err
		}
		r.narrowed = true
	}
	if r.start.Compare(r.end) > 0 {
		return ipRange{}, fmt.Errorf("rangeStart %s is after rangeEnd %s in subnet %s", r.start, r.end, subnet)
	}
	return r, nil
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		switch covered := p.Bits() - 8*i; {
		case covered <= 0:
			b[i] = 0xff
		case covered < 8:
			b[i] |= 0xff >> covered
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (r *ipRange) contains(a netip.Addr) bool {
	return a.BitLen() == r.start.BitLen() && r.start.Compare(a) <= 0 && a.Compare(r.end) <= 0
}

// reserved reports addresses inside the range that are never handed out.
func (r *ipRange) reserved(a netip.Addr) bool {
	return a == r.gateway || a == r.subnet.Addr() || a == r.broadcast
}

func (r *ipRange) overlaps(o *ipRange) bool {
	return r.start.BitLen() == o.start.BitLen() && r.start.Compare(o.end) <= 0 && o.start.Compare(r.end) <= 0
}

func (r *ipRange) String() string {
	if r.narrowed {
		return fmt.Sprintf("%s (%s-%s)", r.subnet, r.start, r.end)
	}
	return r.subnet.String()
}

// ipConfig is the result entry for address a inside r.
func (r *ipRange) ipConfig(a netip.Addr) *current.IPConfig {
	return &current.IPConfig{
		Address: net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(r.subnet.Bits(), a.BitLen())},
		Gateway: net.IP(r.gateway.AsSlice()),
	}
}

func newRangeSet(js []rangeJSON) (rangeSet, error) {
	if len(js) == 0 {
		return nil, fmt.Errorf("empty range set")
	}
	s := make(rangeSet, 0, len(js))
	for i, j := range js {
		r, err := newRange(j)
		if err != nil {
			return nil, err
		}
		if i > 0 && r.start.BitLen() != s[0].start.BitLen() {
			return nil, fmt.Errorf("ranges %s and %s mix address families", &s[0], &r)
		}
		for k := range s {
			if s[k].overlaps(&r) {
				return nil, fmt.Errorf("ranges %s and %s overlap", &s[k], &r)
			}
		}
		s = append(s, r)
	}
	return s, nil
}

func (s rangeSet) family() int { return s[0].start.BitLen() }

func (s rangeSet) rangeFor(a netip.Addr) *ipRange {
	for i := range s {
		if s[i].contains(a) {
			return &s[i]
		}
	}
	return nil
}

func (s rangeSet) overlaps(o rangeSet) bool {
	for i := range s {
		for k := range o {
			if s[i].overlaps(&o[k]) {
				return true
			}
		}
	}
	return false
}

func (s rangeSet) String() string {
	parts := make([]string, len(s))
	for i := range s {
		parts[i] = s[i].String()
	}
	return strings.Join(parts, ",")
}

// next is the address after a in range i, wrapping to the following range.
func (s rangeSet) next(i int, a netip.Addr) (int, netip.Addr) {
	if a == s[i].end {
		i = (i + 1) % len(s)
		return i, s[i].start
	}
	return i, a.Next()
}

// walk offers every allocatable address of the set once to fn, in
// host-local's round-robin order: starting after last when the set contains
// it, else at the first range's start. It stops when fn returns true and
// reports whether that happened.
func (s rangeSet) walk(ctx context.Context, last netip.Addr, fn func(netip.Addr, *ipRange) (bool, error)) (bool, error) {
	i, a := 0, s[0].start
	if last.IsValid() {
		for k := range s {
			if s[k].contains(last) {
				i, a = s.next(k, last)
				break
			}
		}
	}
	i0, a0 := i, a
	for n := 1; ; n++ {
		// Huge IPv6 ranges make a full walk endless in practice; let the
		// caller's deadline end it.
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return false, err
			}
		}
		if r := &s[i]; !r.reserved(a) {
			if stop, err := fn(a, r); stop || err != nil {
				return stop, err
			}
		}
		i, a = s.next(i, a)
		if i == i0 && a == a0 {
			return false, nil
		}
	}
}
