package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// allocate reserves one address per range set for a; requested[i], when
// valid, is the address wanted from set i. Any failure removes every
// reservation made here. The caller holds the lock.
//
// File contents are fsynced so that a name which survives a power loss
// never has incomplete content; the directory is not, because losing a name
// in a power loss loses a reservation whose container is gone as well.
func (s *store) allocate(ctx context.Context, sets []rangeSet, requested []netip.Addr, a Attachment) ([]*current.IPConfig, error) {
	content := ownerBytes(a)
	var made []string
	fail := func(err error) ([]*current.IPConfig, error) {
		for _, name := range made {
			if rerr := s.remove(name); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rolling back: %w", rerr))
			}
		}
		return nil, err
	}
	ips := make([]*current.IPConfig, 0, len(sets))
	for idx, set := range sets {
		addr, r, err := s.reserveIn(ctx, idx, set, requested[idx], content)
		if err != nil {
			return fail(err)
		}
		made = append(made, addr.String())
		if err := s.setLastReserved(idx, addr); err != nil {
			return fail(err)
		}
		ips = append(ips, r.ipConfig(addr))
	}
	return ips, nil
}

// reserveIn takes want, or else the next free address of set after its
// round-robin cursor. The content is written and fsynced once, then offered
// under each candidate name until one is free.
func (s *store) reserveIn(ctx context.Context, idx int, set rangeSet, want netip.Addr, content []byte) (netip.Addr, *ipRange, error) {
	tmp, err := s.writeTemp(content, true)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	// Gone already when renameat2 consumed it.
	defer s.remove(tmp)

	if want.IsValid() {
		ok, err := s.claim(tmp, want.String())
		if err != nil {
			return netip.Addr{}, nil, err
		}
		if !ok {
			return netip.Addr{}, nil, types.NewError(types.ErrInternal,
				fmt.Sprintf("requested IP address %s is not available in range set %s", want, set), "")
		}
		return want, set.rangeFor(want), nil
	}

	var got netip.Addr
	var in *ipRange
	found, err := set.walk(ctx, s.lastReserved(idx), func(a netip.Addr, r *ipRange) (bool, error) {
		ok, err := s.claim(tmp, a.String())
		if ok {
			got, in = a, r
		}
		return ok, err
	})
	if err != nil {
		return netip.Addr{}, nil, err
	}
	if !found {
		return netip.Addr{}, nil, exhausted(set)
	}
	return got, in, nil
}

func exhausted(set rangeSet) *types.Error {
	return types.NewError(types.ErrInternal, fmt.Sprintf("no IP addresses available in range set %s", set), "")
}
