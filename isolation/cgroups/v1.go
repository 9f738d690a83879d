package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
)

// v1Used are the controllers the v1 driver places the container in.
var v1Used = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer"}

type v1Manager struct {
	base
	// leaf maps each used controller to the container's directory in its
	// hierarchy; co-mounted controllers share one.
	leaf    map[string]string
	leaves  []string
	levels  [][]string
	parents map[string]bool
	// devLeaf and devLevels place the container in a devices hierarchy
	// mounted on its own. Its cgroup is made only for a container with an
	// allow-list (Resources.Devices non-nil): one without keeps the
	// parent's device access, which a directory of its own would copy
	// anyway.
	devLeaf   string
	devLevels []string
	// namedLevels place the container in the name=systemd hierarchy
	// (the last is its cgroup). It holds no controllers, so a Create that
	// cannot write it leaves it out (namedLevels then nil) and records
	// why in skipped.
	namedLevels []string
	namedMount  string
	skipped     []Skip
}

func newV1(b base, hs []Hierarchy) (*v1Manager, error) {
	m := &v1Manager{base: b, leaf: map[string]string{}, parents: map[string]bool{}}
	for _, h := range hs {
		if h.Name == NamedSystemd && len(h.Controllers) == 0 {
			levels, err := m.placement(h)
			if err != nil {
				return nil, err
			}
			for _, d := range levels[:len(levels)-1] {
				m.parents[d] = true
			}
			m.namedLevels, m.namedMount = levels, h.Mountpoint
			continue
		}
		used, devices := false, false
		for _, c := range h.Controllers {
			for _, u := range v1Used {
				used = used || c == u
			}
			devices = devices || c == "devices"
		}
		if !used && !devices {
			continue
		}
		levels, err := m.placement(h)
		if err != nil {
			return nil, err
		}
		leaf := levels[len(levels)-1]
		for _, c := range h.Controllers {
			m.leaf[c] = leaf
		}
		for _, d := range levels[:len(levels)-1] {
			m.parents[d] = true
		}
		if !used {
			m.devLeaf, m.devLevels = leaf, levels
			continue
		}
		m.leaves = append(m.leaves, leaf)
		m.levels = append(m.levels, levels)
	}
	if err := m.require(b.cfg.Resources); err != nil {
		return nil, err
	}
	return m, nil
}

// require checks that the controllers r needs are mounted.
func (m *v1Manager) require(r Resources) error {
	need := needs(r)
	need["blkio"] = need["io"]
	for _, c := range v1Used {
		if need[c] && m.leaf[c] == "" {
			return fmt.Errorf("the %s controller is not mounted: %w", c, ErrInvalid)
		}
	}
	if r.Devices != nil && m.leaf["devices"] == "" {
		return fmt.Errorf("the devices controller is not mounted, so the device allow-list cannot be enforced: %w", ErrInvalid)
	}
	return nil
}

func (m *v1Manager) Create() error {
	if err := m.create(); err != nil {
		return errors.Join(err, m.destroy(m.madeLeaves, m.parents))
	}
	return nil
}

func (m *v1Manager) create() error {
	for _, levels := range m.levels {
		var init func(string) error
		if levels[len(levels)-1] == m.leaf["cpuset"] {
			init = initCpuset
		}
		if err := m.mkdirs(levels, init); err != nil {
			return err
		}
	}
	if m.devLevels != nil && m.cfg.Resources.Devices != nil {
		if err := m.mkdirs(m.devLevels, nil); err != nil {
			return err
		}
	}
	if err := m.createNamed(); err != nil {
		return err
	}
	return m.set(m.cfg.Resources)
}

// createNamed makes the container's name=systemd cgroup. The container
// runs without one when the hierarchy cannot be written (gone, read-only,
// not the caller's to write): it carries no limits. An existing leaf is
// another container's, an error as in the other hierarchies.
func (m *v1Manager) createNamed() error {
	if m.namedLevels == nil {
		return nil
	}
	err := m.mkdirs(m.namedLevels, nil)
	if err == nil || errors.Is(err, ErrExists) {
		return err
	}
	m.skipped = append(m.skipped, Skip{Mountpoint: m.namedMount, Err: err})
	m.namedLevels = nil
	return nil
}

// initCpuset copies cpuset.cpus and cpuset.mems from the parent: a v1
// cpuset starts empty and refuses tasks until both are set. It also sets
// cgroup.clone_children, so the kernel fills in the cgroups made below it
// (the containers' below a parent nsnet made) at mkdir: writing
// cpuset.cpus costs far more than that.
func initCpuset(dir string) error {
	if err := writeFile(dir, "cgroup.clone_children", "1"); err != nil {
		return err
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readFile(dir, f)
		if err != nil {
			return err
		}
		if cur != "" {
			continue
		}
		v, err := readFile(path.Dir(dir), f)
		if err != nil {
			return err
		}
		if err := writeFile(dir, f, v); err != nil {
			return err
		}
	}
	return nil
}

// joined are the leaves a process of the container belongs in. The devices
// cgroup exists only if the container was created with an allow-list; a
// later Manager (nsnet exec) may not know its resources, so the directory
// itself tells.
//
// The name=systemd cgroup is joined whenever the layout names its
// hierarchy: a container whose Create skipped it has it left out of the
// recorded layout (see Skipper).
func (m *v1Manager) joined() []string {
	out := m.leaves
	if m.devLeaf != "" && exists(m.devLeaf, "") {
		out = append(out[:len(out):len(out)], m.devLeaf)
	}
	if l := m.namedLeaf(); l != "" {
		out = append(out[:len(out):len(out)], l)
	}
	return out
}

// namedLeaf is the container's name=systemd cgroup, "" without one.
func (m *v1Manager) namedLeaf() string {
	if len(m.namedLevels) == 0 {
		return ""
	}
	return m.namedLevels[len(m.namedLevels)-1]
}

// Skipped lists the hierarchies Create left out.
func (m *v1Manager) Skipped() []Skip { return append([]Skip(nil), m.skipped...) }

func (m *v1Manager) Apply(pid int) error {
	for _, leaf := range m.joined() {
		if err := writeFile(leaf, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("moving pid %d into %s: %w", pid, leaf, err)
		}
	}
	return nil
}

func (m *v1Manager) Set(r Resources) error {
	if err := r.Validate(m.cfg.Host); err != nil {
		return err
	}
	if err := m.require(r); err != nil {
		return err
	}
	return m.set(r)
}

func (m *v1Manager) set(r Resources) error {
	if d := m.leaf["cpuset"]; d != "" {
		if r.CpusetCpus != "" {
			if err := writeFile(d, "cpuset.cpus", r.CpusetCpus); err != nil {
				return err
			}
		}
		if r.CpusetMems != "" {
			if err := writeFile(d, "cpuset.mems", r.CpusetMems); err != nil {
				return err
			}
		}
	}
	if err := m.setMemory(r); err != nil {
		return err
	}
	if d := m.leaf["cpu"]; d != "" {
		if r.CPUShares != 0 {
			if err := writeFile(d, "cpu.shares", strconv.FormatUint(r.CPUShares, 10)); err != nil {
				return err
			}
		}
		switch {
		case r.CPUs == Unlimited:
			if err := writeFile(d, "cpu.cfs_quota_us", "-1"); err != nil {
				return err
			}
		case r.CPUs > 0:
			if err := writeFile(d, "cpu.cfs_period_us", strconv.Itoa(cfsPeriod)); err != nil {
				return err
			}
			if err := writeFile(d, "cpu.cfs_quota_us", strconv.FormatInt(cfsQuota(r.CPUs), 10)); err != nil {
				return err
			}
		}
	}
	if d := m.leaf["pids"]; d != "" && r.PidsLimit != 0 {
		v := "max"
		if r.PidsLimit > 0 {
			v = strconv.FormatInt(r.PidsLimit, 10)
		}
		if err := writeFile(d, "pids.max", v); err != nil {
			return err
		}
	}
	if d := m.leaf["blkio"]; d != "" {
		if r.BlkioWeight != 0 {
			// Kernels without CFQ (5.0+) only offer the BFQ file.
			f := "blkio.weight"
			if !exists(d, f) && exists(d, "blkio.bfq.weight") {
				f = "blkio.bfq.weight"
			}
			if err := writeFile(d, f, strconv.Itoa(int(r.BlkioWeight))); err != nil {
				return err
			}
		}
		for _, t := range []struct {
			file  string
			rates []DeviceRate
		}{{"blkio.throttle.read_bps_device", r.DeviceReadBps}, {"blkio.throttle.write_bps_device", r.DeviceWriteBps}} {
			// The kernel takes one device per write.
			for _, d2 := range t.rates {
				if err := writeFile(d, t.file, fmt.Sprintf("%s %d", d2.dev(), d2.Rate)); err != nil {
					return err
				}
			}
		}
	}
	if r.Devices != nil {
		d := m.leaf["devices"]
		// Set does not move a running container's processes, which keep
		// forking, so one created without a devices cgroup cannot get one.
		if d == m.devLeaf && !exists(d, "") {
			return fmt.Errorf("the container was created without a device allow-list, so it has no devices cgroup to restrict: %w", ErrInvalid)
		}
		if err := setDevicesV1(d, r.Devices); err != nil {
			return err
		}
	}
	return nil
}

// setMemory keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at
// every step, which the kernel enforces: when the swap limit grows it is
// written first, otherwise last.
func (m *v1Manager) setMemory(r Resources) error {
	d := m.leaf["memory"]
	if d == "" || (r.Memory == 0 && r.MemorySwap == 0) {
		return nil
	}
	swap := r.MemorySwap
	if r.Memory == Unlimited && swap == 0 && exists(d, "memory.memsw.limit_in_bytes") {
		swap = Unlimited
	}
	if swap != 0 && !exists(d, "memory.memsw.limit_in_bytes") {
		return fmt.Errorf("memory-swap: %s has no memory.memsw.limit_in_bytes (swap accounting is off; boot with swapaccount=1): %w", d, ErrInvalid)
	}
	swapFirst := false
	if swap != 0 {
		cur, _, err := readUint(d, "memory.memsw.limit_in_bytes")
		if err != nil {
			return err
		}
		swapFirst = swap == Unlimited || uint64(swap) >= cur
	}
	writeSwap := func() error {
		if swap == 0 {
			return nil
		}
		return writeFile(d, "memory.memsw.limit_in_bytes", strconv.FormatInt(swap, 10))
	}
	if swapFirst {
		if err := writeSwap(); err != nil {
			return err
		}
	}
	if r.Memory != 0 {
		if err := writeFile(d, "memory.limit_in_bytes", strconv.FormatInt(r.Memory, 10)); err != nil {
			return err
		}
	}
	if !swapFirst {
		return writeSwap()
	}
	return nil
}

func (m *v1Manager) Stats() (Stats, error) {
	var s Stats
	// A host may mount only the devices controller, which keeps no stats.
	if len(m.leaves) > 0 {
		if _, err := os.Stat(m.leaves[0]); err != nil {
			return s, fmt.Errorf("cgroup stats: %w", err)
		}
	}
	type u struct {
		ctrl, file string
		dst        *uint64
	}
	for _, f := range []u{
		{"memory", "memory.usage_in_bytes", &s.MemoryUsage},
		{"memory", "memory.max_usage_in_bytes", &s.MemoryPeak},
		{"cpuacct", "cpuacct.usage", &s.CPUUsage},
		{"pids", "pids.current", &s.Pids},
	} {
		if d := m.leaf[f.ctrl]; d != "" {
			v, _, err := readUint(d, f.file)
			if err != nil {
				return s, err
			}
			*f.dst = v
		}
	}
	if d := m.leaf["cpu"]; d != "" {
		cs, err := readKeyed(d, "cpu.stat")
		if err != nil {
			return s, err
		}
		s.NrPeriods, s.NrThrottled, s.ThrottledTime = cs["nr_periods"], cs["nr_throttled"], cs["throttled_time"]
	}
	var err error
	s.OOMKills, err = m.OOMKills()
	return s, err
}

func (m *v1Manager) OOMKills() (uint64, error) {
	d := m.leaf["memory"]
	if d == "" {
		return 0, nil
	}
	oc, err := readKeyed(d, "memory.oom_control")
	return oc["oom_kill"], err
}

func (m *v1Manager) freezer(state string) error {
	d := m.leaf["freezer"]
	if d == "" {
		return errors.New("the freezer controller is not mounted")
	}
	if err := writeFile(d, "freezer.state", state); err != nil {
		return err
	}
	return waitFor(d+" to be "+state, func() (bool, error) {
		cur, err := readFile(d, "freezer.state")
		return cur == state, err
	})
}

func (m *v1Manager) Freeze() error { return m.freezer("FROZEN") }
func (m *v1Manager) Thaw() error   { return m.freezer("THAWED") }

// Destroy tries the devices leaf too: whether Create made it depends on
// resources a later Manager (nsnet rm) may not know, and destroy skips a
// missing leaf.
func (m *v1Manager) Destroy() error {
	leaves := m.leaves
	for _, l := range []string{m.devLeaf, m.namedLeaf()} {
		if l != "" {
			leaves = append(leaves[:len(leaves):len(leaves)], l)
		}
	}
	return m.destroy(leaves, m.parents)
}
