package cgroups

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// IsZero reports whether r asks for no limit at all. Device rules are
// not limits here: every unprivileged container has them, and a host
// without cgroups still keeps device nodes out through nodev mounts.
func (r Resources) IsZero() bool {
	return r.Memory == 0 && r.MemorySwap == 0 && r.CPUs == 0 && r.CPUShares == 0 &&
		r.CpusetCpus == "" && r.CpusetMems == "" && r.PidsLimit == 0 && r.BlkioWeight == 0 &&
		len(r.DeviceReadBps) == 0 && len(r.DeviceWriteBps) == 0
}

// Merge returns r with the limits that u sets replacing its own, as an
// update of a running container does; device rates replace those of the
// same device.
func (r Resources) Merge(u Resources) Resources {
	out := r
	if u.Memory != 0 {
		out.Memory = u.Memory
	}
	if u.MemorySwap != 0 {
		out.MemorySwap = u.MemorySwap
	}
	if u.CPUs != 0 {
		out.CPUs = u.CPUs
	}
	if u.CPUShares != 0 {
		out.CPUShares = u.CPUShares
	}
	if u.CpusetCpus != "" {
		out.CpusetCpus = u.CpusetCpus
	}
	if u.CpusetMems != "" {
		out.CpusetMems = u.CpusetMems
	}
	if u.PidsLimit != 0 {
		out.PidsLimit = u.PidsLimit
	}
	if u.BlkioWeight != 0 {
		out.BlkioWeight = u.BlkioWeight
	}
	out.DeviceReadBps = mergeRates(r.DeviceReadBps, u.DeviceReadBps)
	out.DeviceWriteBps = mergeRates(r.DeviceWriteBps, u.DeviceWriteBps)
	return out
}

func mergeRates(old, upd []DeviceRate) []DeviceRate {
	if len(upd) == 0 {
		return old
	}
	out := append([]DeviceRate(nil), upd...)
	have := map[string]bool{}
	for _, d := range upd {
		have[d.dev()] = true
	}
	for _, d := range old {
		if !have[d.dev()] {
			out = append(out, d)
		}
	}
	return out
}

// ParseDeviceRate parses Docker's --device-read-bps/--device-write-bps
// value PATH:RATE, such as /dev/sda:1mb, into the block device's numbers
// and a rate in bytes per second.
func ParseDeviceRate(s string) (DeviceRate, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return DeviceRate{}, invalid("device rate %q: want PATH:RATE, e.g. /dev/sda:1mb", s)
	}
	path, rate := s[:i], s[i+1:]
	n, err := ParseBytes(rate)
	if err != nil {
		return DeviceRate{}, invalid("device rate %q: %v", s, err)
	}
	if n <= 0 {
		return DeviceRate{}, invalid("device rate %q: the rate must be positive", s)
	}
	major, minor, err := blockDevice(path)
	if err != nil {
		return DeviceRate{}, invalid("device rate %q: %v", s, err)
	}
	return DeviceRate{Major: major, Minor: minor, Rate: uint64(n)}, nil
}

// blockDevice returns the numbers of the block device at path. Limits
// apply to whole disks only; the kernel refuses a partition in io.max and
// blkio throttle files.
func blockDevice(path string) (major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, fmt.Errorf("%s is not a block device", path)
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}
