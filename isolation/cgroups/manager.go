package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Manager controls one container's cgroup.
type Manager interface {
	// Create makes the cgroup directories and writes the configured limits.
	Create() error
	// Apply moves a process into the cgroup.
	Apply(pid int) error
	// Set validates and writes new limits, for a running container too.
	Set(r Resources) error
	Stats() (Stats, error)
	// OOMKills is Stats().OOMKills, read alone: a container's exit
	// checks it on every run.
	OOMKills() (uint64, error)
	// Freeze stops every task of the cgroup and returns once they are stopped.
	Freeze() error
	Thaw() error
	// Destroy removes the cgroup and the parent directories Create made.
	// The cgroup must be empty.
	Destroy() error
	// Path is the cgroup relative to the caller's own cgroup ("nsnet/ID"),
	// or absolute ("/x/ID") for an absolute parent; it is the same in every
	// hierarchy.
	Path() string
	// Created lists the directories Create made, for a later Manager's
	// Config.Created (nsnet rm runs in another process than nsnet run).
	Created() []string
}

// Stats are the counters of a cgroup. Times are in nanoseconds.
type Stats struct {
	MemoryUsage   uint64 `json:"memory_usage"`
	MemoryPeak    uint64 `json:"memory_peak"`
	CPUUsage      uint64 `json:"cpu_usage_ns"`
	Pids          uint64 `json:"pids"`
	NrPeriods     uint64 `json:"nr_periods"`
	NrThrottled   uint64 `json:"nr_throttled"`
	ThrottledTime uint64 `json:"throttled_time_ns"`
	OOMKills      uint64 `json:"oom_kills"`
}

// DirOps creates and removes cgroup directories. cgroupfs fills a new
// directory with control files and removes them with rmdir; tests pass a
// fake that does the same on a plain filesystem.
type DirOps interface {
	Mkdir(dir string) error
	Rmdir(dir string) error
}

type kernelDirs struct{}

func (kernelDirs) Mkdir(dir string) error { return os.Mkdir(dir, 0o755) }
func (kernelDirs) Rmdir(dir string) error { return unix.Rmdir(dir) }

// DefaultParent is the parent used when Config.Parent is empty.
const DefaultParent = "nsnet"

// Config describes one container's cgroup.
type Config struct {
	// ID names the cgroup; one path element.
	ID string
	// Parent is relative to the caller's cgroup, or absolute ("/x") from
	// the hierarchy's root. Empty means DefaultParent. For the systemd
	// driver it is a slice ("foo-bar.slice"), empty means DefaultSlice.
	Parent    string
	Resources Resources
	Host      Host
	// Prefix is prepended to every mount point; empty on a real host, a
	// temporary directory in tests.
	Prefix string
	// Dirs defaults to the kernel.
	Dirs DirOps
	// Created is what an earlier Manager's Created returned, so Destroy
	// removes those parents too.
	Created []string
	// RemoveEmptyParents makes Destroy remove every parent level it
	// leaves empty, whoever made it: for a parent that belongs to the
	// runtime by name (DefaultParent), shared by containers that come
	// and go in any order.
	RemoveEmptyParents bool
	// Driver is DriverCgroupfs (also when empty) or DriverSystemd.
	Driver string
	// Systemd is the systemd driver's D-Bus client; nil talks to the
	// system's systemd.
	Systemd SystemdBus
}

// The cgroup drivers: nsnet writes cgroupfs itself, or asks systemd for a
// scope unit (see DefaultDriver).
const (
	DriverCgroupfs = "cgroupfs"
	DriverSystemd  = "systemd"
)

// ErrExists is returned by Create when the container's cgroup already exists.
var ErrExists = errors.New("cgroup already exists")

// New validates the configuration and returns the driver for the layout.
// Nothing is created until Create.
func New(l Layout, c Config) (Manager, error) {
	if err := c.Resources.Validate(c.Host); err != nil {
		return nil, err
	}
	if c.Dirs == nil {
		c.Dirs = kernelDirs{}
	}
	switch c.Driver {
	case "", DriverCgroupfs:
	case DriverSystemd:
		return newSystemd(l, c)
	default:
		return nil, invalid("cgroup driver %q: want %s or %s", c.Driver, DriverCgroupfs, DriverSystemd)
	}
	rel, err := relPath(c.Parent, c.ID)
	if err != nil {
		return nil, err
	}
	b := base{rel: rel, cfg: c, created: append([]string(nil), c.Created...)}
	switch l.Mode {
	case ModeUnified:
		if l.V2 == nil {
			return nil, errors.New("unified layout without a v2 hierarchy")
		}
		return newV2(b, *l.V2)
	case ModeLegacy, ModeHybrid:
		return newV1(b, l.V1)
	}
	return nil, fmt.Errorf("cgroup layout %v: %w", l.Mode, ErrNoCgroups)
}

// relPath joins parent and id, refusing anything that could climb out.
func relPath(parent, id string) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return "", invalid("cgroup name %q is not a single path element", id)
	}
	if parent == "" {
		parent = DefaultParent
	}
	if strings.ContainsRune(parent, 0) {
		return "", invalid("cgroup parent %q contains NUL", parent)
	}
	for _, e := range strings.Split(parent, "/") {
		if e == ".." {
			return "", invalid("cgroup parent %q contains ..", parent)
		}
	}
	return path.Join(parent, id), nil
}

// base is what both drivers share.
type base struct {
	rel     string
	cfg     Config
	created []string
	// madeLeaves are the leaves this Manager created, the only ones a
	// failed Create may remove: an existing leaf is another container's.
	madeLeaves []string
}

func (b *base) Path() string { return b.rel }

func (b *base) Created() []string { return append([]string(nil), b.created...) }

// placement returns the directories from the first level below the
// container path's start (the caller's cgroup, or the hierarchy root for an
// absolute parent) down to the leaf.
func (b *base) placement(h Hierarchy) ([]string, error) {
	start, rel := h.Own, b.rel
	if strings.HasPrefix(b.rel, "/") {
		start, rel = "/", strings.TrimPrefix(b.rel, "/")
	}
	cur, err := h.dir(b.cfg.Prefix, start)
	if err != nil {
		return nil, err
	}
	var levels []string
	for _, e := range strings.Split(rel, "/") {
		cur = path.Join(cur, e)
		levels = append(levels, cur)
	}
	return levels, nil
}

// mkdirs creates the missing levels and records them; onCreate runs for each
// new intermediate level before the next one is made below it. A leaf that
// exists already is an error: it would belong to another container.
func (b *base) mkdirs(levels []string, onCreate func(dir string) error) error {
	// Another container's Destroy may remove a shared parent between our
	// finding it and creating below it; start over from the top then.
	const attempts = 3
	for try := 1; ; try++ {
		err := b.mkdirsOnce(levels, onCreate)
		if !errors.Is(err, errParentGone) || try == attempts {
			return err
		}
	}
}

var errParentGone = errors.New("parent cgroup removed meanwhile")

func (b *base) mkdirsOnce(levels []string, onCreate func(dir string) error) error {
	for i, dir := range levels {
		err := b.cfg.Dirs.Mkdir(dir)
		leaf := i == len(levels)-1
		switch {
		case errors.Is(err, os.ErrNotExist) && i > 0:
			return fmt.Errorf("creating cgroup %s: %w: %w", dir, errParentGone, err)
		case errors.Is(err, os.ErrExist) && leaf:
			return fmt.Errorf("creating %s: %w", dir, ErrExists)
		case errors.Is(err, os.ErrExist):
			continue
		case err != nil:
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		if leaf {
			b.madeLeaves = append(b.madeLeaves, dir)
		} else {
			b.created = append(b.created, dir)
		}
		if onCreate != nil {
			if err := onCreate(dir); err != nil {
				return err
			}
		}
	}
	return nil
}

// destroy removes the leaves and then the recorded parents, deepest first.
// Only recorded directories that are among parents, the levels between the
// anchor and a leaf, are removed. Parents still holding other containers'
// cgroups stay.
func (b *base) destroy(leaves []string, parents map[string]bool) error {
	dirs := append([]string(nil), leaves...)
	for _, d := range b.created {
		// Anything else recorded (a tampered state, or another
		// container's parent) is not ours to remove.
		if parents[d] {
			dirs = append(dirs, d)
		}
	}
	if b.cfg.RemoveEmptyParents {
		for d := range parents {
			dirs = append(dirs, d)
		}
	}
	sort.SliceStable(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	isLeaf := map[string]bool{}
	for _, l := range leaves {
		isLeaf[l] = true
	}
	var errs []error
	done := map[string]bool{}
	for _, d := range dirs {
		if done[d] {
			continue
		}
		done[d] = true
		err := b.cfg.Dirs.Rmdir(d)
		switch {
		case err == nil, errors.Is(err, os.ErrNotExist):
		case !isLeaf[d] && (errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENOTEMPTY)):
		default:
			errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
		}
	}
	if len(errs) == 0 {
		b.created = nil
	}
	return errors.Join(errs...)
}

// writeFile writes a control file, which must exist: cgroupfs files are
// never created, and creating one by mistake (on a non-cgroup path) would
// hide a missing controller.
func writeFile(dir, name, value string) error {
	p := path.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, p, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, p, err)
	}
	return nil
}

func readFile(dir, name string) (string, error) {
	b, err := os.ReadFile(path.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("reading cgroup file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// readUint reads a single-number file; a missing file (controller or kernel
// feature absent) reads as ok=false.
func readUint(dir, name string) (v uint64, ok bool, err error) {
	s, err := readFile(dir, name)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if s == "max" {
		return 0, true, nil
	}
	v, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s/%s: %w", dir, name, err)
	}
	return v, true, nil
}

// readKeyed reads a flat keyed file ("key value" lines) such as cpu.stat;
// a missing file reads as empty.
func readKeyed(dir, name string) (map[string]uint64, error) {
	s, err := readFile(dir, name)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]uint64{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

func exists(dir, name string) bool {
	_, err := os.Stat(path.Join(dir, name))
	return err == nil
}

// waitFor polls until check reports done; freezing is asynchronous in both
// cgroup versions.
func waitFor(what string, check func() (bool, error)) error {
	deadline := time.Now().Add(10 * time.Second)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		ok, err := check()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", what)
		}
		time.Sleep(delay)
	}
}
