package cgroups

import (
	"fmt"
	"math"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// sdInfinity is how systemd's D-Bus API spells "no limit" for the uint64
// limits.
const sdInfinity uint64 = math.MaxUint64

// The systemd versions that added properties nsnet sets. systemd refuses a
// whole call that has a property it does not know, so older ones get
// these left out; the v2 driver writes the same limits to the cgroup.
const (
	sdCollectMode     = 236
	sdCPUQuotaPeriod  = 242
	sdAllowedCPUsMems = 244
)

// since reports whether systemd version v has a property added in want;
// 0, an unknown version, counts as recent.
func since(v, want int) bool { return v == 0 || v >= want }

func prop(name string, v any) sdbus.Property {
	return sdbus.Property{Name: name, Value: dbus.MakeVariant(v)}
}

// scopeProps describe a new scope holding pid. DefaultDependencies=no keeps
// the scope out of shutdown ordering, as machined does for containers;
// CollectMode unloads a failed scope (one whose process was OOM-killed,
// say), so its name is free for the next container.
func scopeProps(id, slice string, pid, version int) []sdbus.Property {
	p := []sdbus.Property{
		prop("Description", "nsnet container "+id),
		prop("Slice", slice),
		prop("PIDs", []uint32{uint32(pid)}),
		prop("Delegate", true),
		prop("DefaultDependencies", false),
	}
	if since(version, sdCollectMode) {
		p = append(p, prop("CollectMode", "inactive-or-failed"))
	}
	return p
}

// ioBandwidth is one entry of IOReadBandwidthMax/IOWriteBandwidthMax, D-Bus
// type (st).
type ioBandwidth struct {
	Path string
	Rate uint64
}

func sdLimit(v int64) uint64 {
	if v == Unlimited {
		return sdInfinity
	}
	return uint64(v)
}

// limitProps are the unit properties for r, which must be valid; zero
// fields are left out, as the v2 driver leaves their files alone.
func limitProps(r Resources, version int) ([]sdbus.Property, error) {
	var p []sdbus.Property
	if r.Memory != 0 {
		p = append(p, prop("MemoryMax", sdLimit(r.Memory)))
	}
	// MemorySwapMax is swap alone, --memory-swap is memory plus swap.
	switch {
	case r.MemorySwap == Unlimited:
		p = append(p, prop("MemorySwapMax", sdInfinity))
	case r.MemorySwap > 0:
		p = append(p, prop("MemorySwapMax", uint64(r.MemorySwap-r.Memory)))
	}
	if r.CPUs != 0 {
		perSec := sdInfinity
		if r.CPUs != Unlimited {
			perSec = uint64(cfsQuota(r.CPUs)) * 1000000 / cfsPeriod
		}
		p = append(p, prop("CPUQuotaPerSecUSec", perSec))
		if since(version, sdCPUQuotaPeriod) {
			p = append(p, prop("CPUQuotaPeriodUSec", uint64(cfsPeriod)))
		}
	}
	if r.CPUShares != 0 {
		p = append(p, prop("CPUWeight", sharesToWeight(r.CPUShares)))
	}
	for _, s := range []struct{ name, list string }{
		{"AllowedCPUs", r.CpusetCpus},
		{"AllowedMemoryNodes", r.CpusetMems},
	} {
		if s.list == "" || !since(version, sdAllowedCPUsMems) {
			continue
		}
		mask, err := listMask(s.list)
		if err != nil {
			return nil, invalid("%s %q: %v", s.name, s.list, err)
		}
		p = append(p, prop(s.name, mask))
	}
	if r.PidsLimit != 0 {
		p = append(p, prop("TasksMax", sdLimit(r.PidsLimit)))
	}
	if r.BlkioWeight != 0 {
		p = append(p, prop("IOWeight", blkioToIOWeight(r.BlkioWeight)))
	}
	for _, b := range []struct {
		name  string
		rates []DeviceRate
	}{
		{"IOReadBandwidthMax", r.DeviceReadBps},
		{"IOWriteBandwidthMax", r.DeviceWriteBps},
	} {
		if len(b.rates) == 0 {
			continue
		}
		var v []ioBandwidth
		for _, d := range b.rates {
			// systemd takes a device node; udev's /dev/block links name
			// one by number.
			v = append(v, ioBandwidth{Path: fmt.Sprintf("/dev/block/%s", d.dev()), Rate: d.Rate})
		}
		p = append(p, prop(b.name, v))
	}
	return p, nil
}

// listMask turns a list such as "0-2,9" into systemd's CPU/node bitmap:
// bit n%8 of byte n/8 is CPU n.
func listMask(list string) ([]byte, error) {
	set, err := parseList(list)
	if err != nil {
		return nil, err
	}
	hi := 0
	for n := range set {
		hi = max(hi, n)
	}
	mask := make([]byte, hi/8+1)
	for n := range set {
		mask[n/8] |= 1 << (n % 8)
	}
	return mask, nil
}
