package ipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// hostLocal is the in-process host-local driver. It keeps no state between
// calls; every verb reads its Request.
type hostLocal struct {
	lockTimeout time.Duration
}

var _ Driver = (*hostLocal)(nil)

func requireContainer(a Attachment, needIfName bool) error {
	switch {
	case strings.TrimSpace(a.ContainerID) == "":
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID is required", "")
	case needIfName && a.IfName == "":
		return types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME is required", "")
	}
	return nil
}

func (h *hostLocal) Add(ctx context.Context, r Request) (*current.Result, error) {
	if err := requireContainer(r.Attachment, true); err != nil {
		return nil, err
	}
	c, err := parseHostLocal(r.Stdin, r.Network, r.Args)
	if err != nil {
		return nil, err
	}
	want, err := c.assignRequested()
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: resultVersion(c.cniVersion), Routes: c.routes}
	if c.resolvConf != "" {
		if res.DNS, err = parseResolvConf(c.resolvConf); err != nil {
			return nil, err
		}
	}
	s, err := openStore(c.dir, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.lock(ctx, h.lockTimeout); err != nil {
		return nil, err
	}
	if res.IPs, err = s.allocate(ctx, c.sets, want, r.Attachment); err != nil {
		return nil, err
	}
	return res, nil
}

func (h *hostLocal) Del(ctx context.Context, r Request, hint []net.IP) error {
	if err := requireContainer(r.Attachment, false); err != nil {
		return err
	}
	dir, err := storeDir(r)
	if err != nil {
		return err
	}
	s, err := openStore(dir, false)
	if errors.Is(err, errNoStore) {
		return nil
	}
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.lock(ctx, h.lockTimeout); err != nil {
		return err
	}
	if len(hint) > 0 {
		return s.releaseHinted(r.Attachment, hint)
	}
	return s.releaseScan(r.Attachment)
}

func hintName(ip net.IP) (string, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return "", fmt.Errorf("hint %q is not an IP address", ip)
	}
	return a.Unmap().String(), nil
}

// releaseHinted removes the named files that belong to a, reading each first
// because the address may have been released and handed to someone else.
func (s *store) releaseHinted(a Attachment, hint []net.IP) error {
	var errs []error
	for _, ip := range hint {
		name, err := hintName(ip)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		o, err := s.owner(name)
		switch {
		case isNotExist(err):
		case err != nil:
			errs = append(errs, err)
		case o.is(a) || o.legacyOf(a):
			errs = append(errs, s.remove(name))
		}
	}
	return errors.Join(errs...)
}

// releaseScan removes a's reservations the way host-local does: exact
// matches, or legacy files of the container when there is no exact match.
func (s *store) releaseScan(a Attachment) error {
	names, temps, err := s.reservations()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range temps {
		errs = append(errs, s.remove(t))
	}
	var legacy []string
	found := false
	for _, name := range names {
		o, err := s.owner(name)
		switch {
		case isNotExist(err):
		case err != nil:
			errs = append(errs, err)
		case o.is(a):
			found = true
			errs = append(errs, s.remove(name))
		case o.legacyOf(a):
			legacy = append(legacy, name)
		}
	}
	if !found {
		for _, name := range legacy {
			errs = append(errs, s.remove(name))
		}
	}
	return errors.Join(errs...)
}

func (h *hostLocal) Check(ctx context.Context, r Request, ips []net.IP) error {
	if err := requireContainer(r.Attachment, true); err != nil {
		return err
	}
	dir, err := storeDir(r)
	if err != nil {
		return err
	}
	who := fmt.Sprintf("container %q interface %q", r.ContainerID, r.IfName)
	s, err := openStore(dir, false)
	if errors.Is(err, errNoStore) {
		return fmt.Errorf("no address reserved for %s: data dir %s does not exist", who, dir)
	}
	if err != nil {
		return err
	}
	defer s.close()
	if len(ips) == 0 {
		return s.checkAny(r.Attachment, who)
	}
	var problems []string
	for _, ip := range ips {
		name, err := hintName(ip)
		if err != nil {
			return err
		}
		o, err := s.owner(name)
		switch {
		case isNotExist(err):
			problems = append(problems, name+" is not reserved")
		case err != nil:
			return err
		case !o.is(r.Attachment) && !o.legacyOf(r.Attachment):
			problems = append(problems, fmt.Sprintf("%s is reserved for %s", name, o))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("checking addresses of %s in %s: %s", who, dir, strings.Join(problems, "; "))
	}
	return nil
}

// checkAny is host-local's CHECK: some reservation of a exists.
func (s *store) checkAny(a Attachment, who string) error {
	names, _, err := s.reservations()
	if err != nil {
		return err
	}
	for _, name := range names {
		if o, err := s.owner(name); err == nil && (o.is(a) || o.legacyOf(a)) {
			return nil
		}
	}
	return fmt.Errorf("no address reserved for %s in %s", who, s.path)
}

func unavailable(format string, args ...any) *types.Error {
	return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf(format, args...), "")
}

// Status probes without the lock: a STATUS poll must not queue behind ADDs,
// and a slightly stale answer is harmless because ADD decides for itself.
func (h *hostLocal) Status(ctx context.Context, r Request) error {
	c, err := parseHostLocal(r.Stdin, r.Network, "")
	if err != nil {
		return err
	}
	s, err := openStore(c.dir, true)
	if err != nil {
		return unavailable("data dir is unusable: %v", err)
	}
	defer s.close()
	probe, err := s.writeTemp(nil, false)
	if err != nil {
		return unavailable("data dir is not writable: %v", err)
	}
	if err := s.remove(probe); err != nil {
		return unavailable("data dir is not writable: %v", err)
	}
	for idx, set := range c.sets {
		free, err := set.walk(ctx, s.lastReserved(idx), func(a netip.Addr, _ *ipRange) (bool, error) {
			taken, err := s.exists(a.String())
			return !taken, err
		})
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			return unavailable("data dir is unusable: %v", err)
		}
		if !free {
			return unavailable("no IP addresses available in range set %s", set)
		}
	}
	return nil
}
