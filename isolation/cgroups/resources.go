package cgroups

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Unlimited lifts a limit (memory, swap, CPUs, pids) when updating a cgroup.
const Unlimited = -1

// cfsPeriod is the CFS period used for --cpus, in microseconds, as runc and
// Docker use it.
const cfsPeriod = 100000

// Resources are the limits of a container. A zero field is left as it is.
type Resources struct {
	// Memory is the memory limit in bytes.
	Memory int64
	// MemorySwap is memory plus swap in bytes (Docker's --memory-swap), so
	// it is at least Memory; Unlimited allows unlimited swap.
	MemorySwap int64
	// CPUs is the share of CPU time, 1.5 = one and a half CPUs.
	CPUs float64
	// CPUShares is the relative weight, 2..262144 (v1 cpu.shares; converted
	// to cpu.weight on v2).
	CPUShares uint64
	// CpusetCpus and CpusetMems are lists such as "0-2,4".
	CpusetCpus string
	CpusetMems string
	// PidsLimit caps the number of tasks.
	PidsLimit int64
	// BlkioWeight is the relative I/O weight, 10..1000 (converted to
	// io.weight on v2).
	BlkioWeight uint16
	// DeviceReadBps and DeviceWriteBps limit bytes per second per block device.
	DeviceReadBps  []DeviceRate
	DeviceWriteBps []DeviceRate
	// Devices is the device allow-list (see DeviceRule). Nil leaves device
	// access as the parent cgroup has it, for privileged containers; an
	// empty list denies every device. Runtimes pass DefaultDevices() plus
	// the user's rules.
	Devices []DeviceRule
}

// DeviceRate is a limit for one block device.
type DeviceRate struct {
	Major, Minor uint32
	Rate         uint64
}

func (d DeviceRate) dev() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// Host is what the machine offers, for validation.
type Host struct {
	// NumCPU bounds Resources.CPUs.
	NumCPU int
	// CPUs and Mems list the online CPUs and memory nodes ("0-3"); empty
	// means 0..NumCPU-1 and node 0.
	CPUs string
	Mems string
}

// CurrentHost reads the online CPUs and memory nodes from sysfs.
func CurrentHost() (Host, error) {
	cpus, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return Host{}, fmt.Errorf("reading online CPUs: %w", err)
	}
	h := Host{CPUs: strings.TrimSpace(string(cpus)), Mems: "0"}
	set, err := parseList(h.CPUs)
	if err != nil {
		return Host{}, fmt.Errorf("online CPUs: %w", err)
	}
	h.NumCPU = len(set)
	if mems, err := os.ReadFile("/sys/devices/system/node/online"); err == nil {
		h.Mems = strings.TrimSpace(string(mems))
	} else if !errors.Is(err, os.ErrNotExist) {
		return Host{}, fmt.Errorf("reading online memory nodes: %w", err)
	}
	return h, nil
}

// ErrInvalid marks a rejected limit; test with errors.Is.
var ErrInvalid = errors.New("invalid cgroup limit")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Validate checks every limit against the kernel's ranges and the host.
func (r Resources) Validate(h Host) error {
	if r.Memory < Unlimited {
		return invalid("memory %d is negative", r.Memory)
	}
	if r.Memory > 0 && r.Memory < 6*1024*1024 {
		return invalid("memory %d is below the 6 MiB minimum", r.Memory)
	}
	if r.MemorySwap < Unlimited {
		return invalid("memory-swap %d is negative", r.MemorySwap)
	}
	if r.MemorySwap > 0 {
		if r.Memory <= 0 {
			return invalid("memory-swap needs a memory limit")
		}
		if r.MemorySwap < r.Memory {
			return invalid("memory-swap %d is below memory %d: it counts memory plus swap", r.MemorySwap, r.Memory)
		}
	}
	cpus, err := hostList(h.CPUs, h.NumCPU)
	if err != nil {
		return err
	}
	if math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || (r.CPUs < 0 && r.CPUs != Unlimited) {
		return invalid("cpus %v is not a positive number", r.CPUs)
	}
	if r.CPUs > 0 {
		if r.CPUs > float64(len(cpus)) {
			return invalid("cpus %v is more than the %d CPUs of this machine", r.CPUs, len(cpus))
		}
		if q := cfsQuota(r.CPUs); q < 1000 {
			return invalid("cpus %v is below the minimum 0.01", r.CPUs)
		}
	}
	if r.CPUShares != 0 && (r.CPUShares < 2 || r.CPUShares > 262144) {
		return invalid("cpu-shares %d is outside 2..262144", r.CPUShares)
	}
	if err := checkSubset("cpuset-cpus", r.CpusetCpus, cpus, "CPU"); err != nil {
		return err
	}
	mems, err := parseList(orDefault(h.Mems, "0"))
	if err != nil {
		return fmt.Errorf("host memory nodes: %w", err)
	}
	if err := checkSubset("cpuset-mems", r.CpusetMems, mems, "memory node"); err != nil {
		return err
	}
	if r.PidsLimit < Unlimited {
		return invalid("pids-limit %d is negative", r.PidsLimit)
	}
	if r.BlkioWeight != 0 && (r.BlkioWeight < 10 || r.BlkioWeight > 1000) {
		return invalid("blkio-weight %d is outside 10..1000", r.BlkioWeight)
	}
	for _, l := range [][]DeviceRate{r.DeviceReadBps, r.DeviceWriteBps} {
		seen := map[string]bool{}
		for _, d := range l {
			if d.Rate == 0 {
				return invalid("device rate for %s is zero", d.dev())
			}
			if seen[d.dev()] {
				return invalid("device %s is limited twice", d.dev())
			}
			seen[d.dev()] = true
		}
	}
	return validateDevices(r.Devices)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func hostList(list string, n int) (map[int]bool, error) {
	if list != "" {
		set, err := parseList(list)
		if err != nil {
			return nil, fmt.Errorf("host CPUs: %w", err)
		}
		return set, nil
	}
	if n <= 0 {
		return nil, errors.New("host CPU count unknown")
	}
	set := map[int]bool{}
	for i := range n {
		set[i] = true
	}
	return set, nil
}

func checkSubset(flag, list string, avail map[int]bool, what string) error {
	if list == "" {
		return nil
	}
	set, err := parseList(list)
	if err != nil {
		return invalid("%s %q: %v", flag, list, err)
	}
	var missing []int
	for c := range set {
		if !avail[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		sort.Ints(missing)
		return invalid("%s %q: %s %v not on this machine", flag, list, what, missing)
	}
	return nil
}

// parseList reads the kernel's list format "0-2,4".
func parseList(s string) (map[int]bool, error) {
	set := map[int]bool{}
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty list")
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("bad entry %q", part)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil || b < a {
				return nil, fmt.Errorf("bad range %q", part)
			}
		}
		for i := a; i <= b; i++ {
			set[int(i)] = true
		}
	}
	return set, nil
}

func cfsQuota(cpus float64) int64 { return int64(math.Round(cpus * cfsPeriod)) }

// sharesToWeight maps cpu.shares 2..262144 onto cpu.weight 1..10000 along
// the curve the OCI runtimes use since 2025, which keeps the default 1024
// at the default weight 100 (the older linear map gave 39).
func sharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	l := math.Log2(float64(shares))
	exp := (l*l+125*l)/612.0 - 7.0/34.0
	// Rounding to 10 decimals first keeps float noise from pushing exact
	// points such as 1024 -> 100 up by one under Ceil.
	w := uint64(math.Ceil(math.Round(math.Pow(10, exp)*1e10) / 1e10))
	return min(max(w, 1), 10000)
}

// blkioToIOWeight maps blkio.weight 10..1000 linearly onto io.weight 1..10000.
func blkioToIOWeight(w uint16) uint64 {
	if w == 0 {
		return 0
	}
	return 1 + (uint64(w)-10)*9999/990
}

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}

// ParseBytes reads a size such as "512m", "1g", "1.5G", "1024k" or plain
// bytes; units are binary (k = 1024), as Docker reads --memory.
func ParseBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	mult, ok := byteUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q", s, unit)
	}
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("size %q: %w", s, err)
		}
		if n > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return n * int64(mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return int64(v), nil
}
