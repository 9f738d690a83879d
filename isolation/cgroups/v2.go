package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
)

// v2Wanted are the controllers enabled for the container when the parent
// offers them; the ones its limits need are required.
var v2Wanted = []string{"cpuset", "cpu", "io", "memory", "pids"}

// The v2 driver keeps the "no internal processes" rule: a cgroup that
// hands controllers to its children (cgroup.subtree_control) may hold no
// processes. So controllers are enabled only in the intermediate levels
// Create makes, which never hold processes, and the process goes into the
// leaf only. The caller's own cgroup (or the existing parent) is never
// written: it holds the caller, so enabling there would fail with EBUSY, and
// it would change what its other children get. The needed controllers must
// already be in its cgroup.subtree_control (delegated), or Create fails
// before making anything.
type v2Manager struct {
	base
	levels  []string
	leaf    string
	parents map[string]bool
	// attachDevices installs a device allow-list on a cgroup directory; the
	// fake-tree tests replace it, since a plain directory takes no BPF
	// program.
	attachDevices func(dir string, rules []DeviceRule) error
}

func newV2(b base, h Hierarchy) (*v2Manager, error) {
	levels, err := b.placement(h)
	if err != nil {
		return nil, err
	}
	m := &v2Manager{base: b, levels: levels, leaf: levels[len(levels)-1], parents: map[string]bool{}, attachDevices: attachDevices}
	for _, d := range levels[:len(levels)-1] {
		m.parents[d] = true
	}
	return m, nil
}

// needs are the controllers r's limits need, by their v2 names (v1 calls
// io blkio).
func needs(r Resources) map[string]bool {
	return map[string]bool{
		"memory": r.Memory != 0 || r.MemorySwap != 0,
		"cpu":    r.CPUs != 0 || r.CPUShares != 0,
		"cpuset": r.CpusetCpus != "" || r.CpusetMems != "",
		"pids":   r.PidsLimit != 0,
		"io":     r.BlkioWeight != 0 || len(r.DeviceReadBps) > 0 || len(r.DeviceWriteBps) > 0,
	}
}

// available reads which controllers the first missing level would receive:
// the subtree_control of its existing parent.
func (m *v2Manager) available() (map[string]bool, error) {
	dir := path.Dir(m.levels[0])
	for _, l := range m.levels {
		if _, err := os.Stat(l); err != nil {
			break
		}
		dir = l
	}
	s, err := readFile(dir, "cgroup.subtree_control")
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, c := range strings.Fields(s) {
		out[c] = true
	}
	return out, nil
}

func (m *v2Manager) Create() error {
	avail, err := m.available()
	if err != nil {
		return err
	}
	need := needs(m.cfg.Resources)
	for _, c := range v2Wanted {
		if need[c] && !avail[c] {
			return fmt.Errorf("the %s controller is not delegated to %s (add it to cgroup.subtree_control there; that cgroup must hold no processes): %w",
				c, path.Dir(m.levels[0]), ErrInvalid)
		}
	}
	var enable []string
	for _, c := range v2Wanted {
		if avail[c] {
			enable = append(enable, "+"+c)
		}
	}
	onCreate := func(dir string) error {
		if dir == m.leaf || len(enable) == 0 {
			return nil
		}
		return writeFile(dir, "cgroup.subtree_control", strings.Join(enable, " "))
	}
	err = m.mkdirs(m.levels, onCreate)
	if err == nil {
		err = m.set(m.cfg.Resources)
	}
	if err != nil {
		return errors.Join(err, m.destroy(m.madeLeaves, m.parents))
	}
	return nil
}

func (m *v2Manager) Apply(pid int) error {
	if err := writeFile(m.leaf, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		return fmt.Errorf("moving pid %d into %s: %w", pid, m.leaf, err)
	}
	return nil
}

func (m *v2Manager) Set(r Resources) error {
	if err := r.Validate(m.cfg.Host); err != nil {
		return err
	}
	return m.set(r)
}

func limit(v int64) string {
	if v == Unlimited {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

func (m *v2Manager) set(r Resources) error {
	d := m.leaf
	var w []struct{ file, value string }
	add := func(f, v string) { w = append(w, struct{ file, value string }{f, v}) }
	if r.CpusetCpus != "" {
		add("cpuset.cpus", r.CpusetCpus)
	}
	if r.CpusetMems != "" {
		add("cpuset.mems", r.CpusetMems)
	}
	// memory.swap.max is swap alone, Docker's --memory-swap is memory plus
	// swap.
	switch {
	case r.MemorySwap == Unlimited:
		add("memory.swap.max", "max")
	case r.MemorySwap > 0:
		add("memory.swap.max", strconv.FormatInt(r.MemorySwap-r.Memory, 10))
	}
	if r.Memory != 0 {
		add("memory.max", limit(r.Memory))
	}
	if r.CPUShares != 0 {
		add("cpu.weight", strconv.FormatUint(sharesToWeight(r.CPUShares), 10))
	}
	switch {
	case r.CPUs == Unlimited:
		add("cpu.max", fmt.Sprintf("max %d", cfsPeriod))
	case r.CPUs > 0:
		add("cpu.max", fmt.Sprintf("%d %d", cfsQuota(r.CPUs), cfsPeriod))
	}
	if r.PidsLimit != 0 {
		add("pids.max", limit(r.PidsLimit))
	}
	if r.BlkioWeight != 0 {
		// BFQ keeps the blkio range; io.weight (iocost) has its own.
		if exists(d, "io.bfq.weight") {
			add("io.bfq.weight", strconv.Itoa(int(r.BlkioWeight)))
		} else {
			add("io.weight", fmt.Sprintf("default %d", blkioToIOWeight(r.BlkioWeight)))
		}
	}
	for _, line := range ioMax(r.DeviceReadBps, r.DeviceWriteBps) {
		add("io.max", line)
	}
	for _, x := range w {
		if err := writeFile(d, x.file, x.value); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%w (is its controller enabled for %s?)", err, d)
			}
			return err
		}
	}
	// Create runs this before Apply, so the filter is in place before the
	// container's first instruction; nil leaves device access alone.
	if r.Devices != nil {
		return m.attachDevices(d, r.Devices)
	}
	return nil
}

// ioMax merges read and write limits into one io.max line per device, in
// the order devices first appear; a side without a limit is written as max.
func ioMax(read, write []DeviceRate) []string {
	type rw struct{ r, w string }
	var order []string
	lim := map[string]*rw{}
	get := func(d DeviceRate) *rw {
		k := d.dev()
		if lim[k] == nil {
			lim[k] = &rw{"max", "max"}
			order = append(order, k)
		}
		return lim[k]
	}
	for _, d := range read {
		get(d).r = strconv.FormatUint(d.Rate, 10)
	}
	for _, d := range write {
		get(d).w = strconv.FormatUint(d.Rate, 10)
	}
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%s rbps=%s wbps=%s", k, lim[k].r, lim[k].w))
	}
	return out
}

func (m *v2Manager) Stats() (Stats, error) {
	var s Stats
	if _, err := os.Stat(m.leaf); err != nil {
		return s, fmt.Errorf("cgroup stats: %w", err)
	}
	for _, f := range []struct {
		file string
		dst  *uint64
	}{
		{"memory.current", &s.MemoryUsage},
		{"memory.peak", &s.MemoryPeak},
		{"pids.current", &s.Pids},
	} {
		v, _, err := readUint(m.leaf, f.file)
		if err != nil {
			return s, err
		}
		*f.dst = v
	}
	cs, err := readKeyed(m.leaf, "cpu.stat")
	if err != nil {
		return s, err
	}
	s.CPUUsage = cs["usage_usec"] * 1000
	s.NrPeriods, s.NrThrottled, s.ThrottledTime = cs["nr_periods"], cs["nr_throttled"], cs["throttled_usec"]*1000
	s.OOMKills, err = m.OOMKills()
	return s, err
}

func (m *v2Manager) OOMKills() (uint64, error) {
	ev, err := readKeyed(m.leaf, "memory.events")
	return ev["oom_kill"], err
}

func (m *v2Manager) freeze(v string) error {
	if err := writeFile(m.leaf, "cgroup.freeze", v); err != nil {
		return err
	}
	return waitFor(m.leaf+" to reach frozen "+v, func() (bool, error) {
		ev, err := readKeyed(m.leaf, "cgroup.events")
		if err != nil {
			return false, err
		}
		f, ok := ev["frozen"]
		return ok && strconv.FormatUint(f, 10) == v, nil
	})
}

func (m *v2Manager) Freeze() error { return m.freeze("1") }
func (m *v2Manager) Thaw() error   { return m.freeze("0") }

func (m *v2Manager) Destroy() error { return m.destroy([]string{m.leaf}, m.parents) }
