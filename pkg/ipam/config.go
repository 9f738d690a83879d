package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

const defaultDataDir = "/var/lib/cni/networks"

// hostLocalJSON is the part of the network config host-local reads.
type hostLocalJSON struct {
	Name       string `json:"name"`
	CNIVersion string `json:"cniVersion"`
	IPAM       *struct {
		rangeJSON                 // legacy single range, placed in front of "ranges"
		Routes     []*types.Route `json:"routes"`
		DataDir    string         `json:"dataDir"`
		ResolvConf string         `json:"resolvConf"`
		Ranges     [][]rangeJSON  `json:"ranges"`
	} `json:"ipam"`
	RuntimeConfig struct {
		IPRanges [][]rangeJSON `json:"ipRanges"`
		IPs      []string      `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// hostLocalConf is a validated host-local config.
type hostLocalConf struct {
	cniVersion string
	dir        string // <dataDir>/<network>
	resolvConf string
	sets       []rangeSet
	routes     []*types.Route
	requested  []netip.Addr // in host-local's order: CNI_ARGS, args, runtimeConfig
}

func parseHostLocal(stdin []byte, network, cniArgs string) (*hostLocalConf, error) {
	var n hostLocalJSON
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, decodeError("network config", err)
	}
	if n.IPAM == nil {
		return nil, configError(`network config has no "ipam" section`)
	}
	name, err := networkName(Request{Network: network}, n.Name)
	if err != nil {
		return nil, err
	}
	c := &hostLocalConf{
		cniVersion: n.CNIVersion,
		dir:        filepath.Join(dataDirOrDefault(n.IPAM.DataDir), name),
		resolvConf: n.IPAM.ResolvConf,
		routes:     n.IPAM.Routes,
	}
	for i, rt := range c.routes {
		if rt == nil || rt.Dst.IP == nil {
			return nil, configError(fmt.Sprintf("route %d has no dst", i))
		}
	}

	if c.requested, err = requestedFromArgs(cniArgs); err != nil {
		return nil, err
	}
	var fromConf []string
	if n.Args != nil && n.Args.CNI != nil {
		fromConf = append(fromConf, n.Args.CNI.IPs...)
	}
	fromConf = append(fromConf, n.RuntimeConfig.IPs...)
	for _, s := range fromConf {
		a, err := parseRequested(s)
		if err != nil {
			return nil, configError(err.Error())
		}
		c.requested = append(c.requested, a)
	}

	all := n.RuntimeConfig.IPRanges
	if n.IPAM.Subnet != "" {
		all = append(all, []rangeJSON{n.IPAM.rangeJSON})
	}
	all = append(all, n.IPAM.Ranges...)
	if c.sets, err = newRangeSets(all, n.CNIVersion); err != nil {
		return nil, err
	}
	return c, nil
}

func newRangeSets(all [][]rangeJSON, cniVersion string) ([]rangeSet, error) {
	if len(all) == 0 {
		return nil, configError("no IP ranges configured")
	}
	sets := make([]rangeSet, len(all))
	perFamily := map[int]int{}
	for i, js := range all {
		s, err := newRangeSet(js)
		if err != nil {
			return nil, configError(fmt.Sprintf("range set %d: %v", i, err))
		}
		for k := range i {
			if sets[k].overlaps(s) {
				return nil, configError(fmt.Sprintf("range set %d (%s) overlaps range set %d (%s)", i, s, k, sets[k]))
			}
		}
		sets[i] = s
		perFamily[s.family()]++
	}
	if perFamily[32] > 1 || perFamily[128] > 1 {
		// Results before 0.3.0 hold one address per family.
		if old, err := version.GreaterThanOrEqualTo(cniVersion, "0.3.0"); err == nil && !old {
			return nil, configError(fmt.Sprintf("cniVersion %s allows one address per family", cniVersion))
		}
	}
	return sets, nil
}

func dataDirOrDefault(d string) string {
	if d == "" {
		return defaultDataDir
	}
	return d
}

// storeDir reads only what locates the store, so that DEL, CHECK and GC work
// with a config whose ranges no longer validate.
func storeDir(r Request) (string, error) {
	var n struct {
		Name string `json:"name"`
		IPAM *struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(r.Stdin, &n); err != nil {
		return "", decodeError("network config", err)
	}
	if n.IPAM == nil {
		return "", configError(`network config has no "ipam" section`)
	}
	name, err := networkName(r, n.Name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dataDirOrDefault(n.IPAM.DataDir), name), nil
}

// parseRequested accepts an address with or without a prefix length; the
// prefix is ignored because the range set decides the mask.
func parseRequested(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("requested IP %q is not an address or CIDR", s)
		}
		return p.Addr().Unmap(), nil
	}
	return parseAddr("requested IP", s)
}

// requestedFromArgs reads IP= (comma-separated) from CNI_ARGS, ignoring
// every other key.
func requestedFromArgs(args string) ([]netip.Addr, error) {
	var out []netip.Addr
	for pair := range strings.SplitSeq(args, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: invalid pair %q", pair), "")
		}
		if k != "IP" {
			continue
		}
		for s := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			a, err := parseRequested(s)
			if err != nil {
				return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: "+err.Error(), "")
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// assignRequested maps each requested address to the range set holding it;
// index i of the result is the address for set i (invalid when none).
func (c *hostLocalConf) assignRequested() ([]netip.Addr, error) {
	per := make([]netip.Addr, len(c.sets))
	for _, a := range c.requested {
		idx, r := -1, (*ipRange)(nil)
		for i, s := range c.sets {
			if r = s.rangeFor(a); r != nil {
				idx = i
				break
			}
		}
		switch {
		case idx < 0:
			return nil, configError(fmt.Sprintf("requested IP %s is not in any configured range", a))
		case a == r.gateway:
			return nil, configError(fmt.Sprintf("requested IP %s is the gateway of %s", a, r))
		case r.reserved(a):
			return nil, configError(fmt.Sprintf("requested IP %s is the network or broadcast address of %s", a, r))
		case per[idx].IsValid() && per[idx] != a:
			return nil, configError(fmt.Sprintf("requested IPs %s and %s both fall in range set %d (%s); one address per range set", per[idx], a, idx, c.sets[idx]))
		}
		per[idx] = a
	}
	return per, nil
}
