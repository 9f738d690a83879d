package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation"
	"github.com/nsnet/nsnet/isolation/cgroups"
)

// Cgroup is where a container's cgroup lives. The layout is recorded as
// nsnet run saw it: a later rm, stats or update may run in another cgroup,
// and a path relative to its own would name another directory.
type Cgroup struct {
	Layout cgroups.Layout `json:"layout"`
	Parent string         `json:"parent,omitempty"`
	Driver string         `json:"driver,omitempty"`
	// Path is the cgroup relative to nsnet run's own ("nsnet/ID"), or
	// absolute.
	Path string `json:"path"`
}

// initTasks is about how many tasks of a pids limit nsnet's init takes:
// its Go runtime's threads, 8 or 9 measured (one more with an exec
// socket), and the command's first fork.
const initTasks = 10

// checkPidsRoom refuses a pids limit that leaves the command of a
// container with the init no task: the init's runtime would fail to make
// its threads, which kills it.
func checkPidsRoom(limit int64, init bool) error {
	if init && limit > 0 && limit <= initTasks {
		return fmt.Errorf("--pids-limit %d leaves no room for the command: nsnet's init takes about %d tasks (raise it, or run with --no-init)", limit, initTasks)
	}
	return nil
}

// cgroupPlan decides a new container's cgroup and validates its limits,
// before anything exists. A host without cgroups runs containers without
// one, unless limits were asked for.
func cgroupPlan(id string, cfg Config) (*Cgroup, cgroups.Manager, error) {
	if cfg.Privileged && len(cfg.DeviceRules) > 0 {
		return nil, nil, errors.New("device cgroup rules have no effect on a privileged container, which may use every device")
	}
	if err := checkPidsRoom(cfg.Resources.PidsLimit, cfg.Init); err != nil {
		return nil, nil, err
	}
	l, err := cgroups.DetectHost()
	if errors.Is(err, cgroups.ErrNoCgroups) && cfg.Resources.IsZero() {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cgroups: %w", err)
	}
	driver := cfg.CgroupManager
	if driver == "" {
		driver = cgroups.DefaultDriver(l)
	}
	cg := &Cgroup{Layout: l, Parent: cfg.CgroupParent, Driver: driver}
	m, err := cg.manager(id, cfg.resources())
	if err != nil {
		return nil, nil, err
	}
	cg.Path = m.Path()
	return cg, m, nil
}

// manager returns the driver of cg for container id, with the limits r
// written by Create or Set; Destroy removes the parents among created.
func (cg *Cgroup) manager(id string, r cgroups.Resources, created ...string) (cgroups.Manager, error) {
	host, err := cgroups.CurrentHost()
	if err != nil {
		return nil, err
	}
	return cgroups.New(cg.Layout, cgroups.Config{
		ID:        id,
		Parent:    cg.Parent,
		Resources: r,
		Host:      host,
		Created:   created,
		Driver:    cg.Driver,
		// Every nsnet may remove its own default parent once empty, also
		// one made by an nsnet with another state root.
		RemoveEmptyParents: cg.Parent == "" && cg.Driver != cgroups.DriverSystemd,
	})
}

// cgroupfs is what a container with cgroup cg sees at /sys/fs/cgroup: the
// hierarchies of the host, in directories named as there ("cpu,cpuacct").
// None without a cgroup.
func (cg *Cgroup) cgroupfs() isolation.Cgroupfs {
	var fs isolation.Cgroupfs
	switch {
	case cg == nil:
		return fs
	case cg.Layout.Mode == cgroups.ModeUnified:
		fs.V2 = true
		return fs
	}
	dirs := make(map[string]bool, len(cg.Layout.V1))
	for _, h := range cg.Layout.V1 {
		dir := path.Base(h.Mountpoint)
		if dir == "/" || dirs[dir] {
			// A hierarchy mounted at / or two in directories of the
			// same name, on a host laid out by hand.
			dir = strings.Join(h.Controllers, ",")
			if h.Name != "" {
				dir = h.Name
			}
		}
		if dirs[dir] {
			continue
		}
		dirs[dir] = true
		fs.V1 = append(fs.V1, isolation.CgroupHierarchy{Dir: dir, Controllers: h.Controllers, Name: h.Name})
	}
	return fs
}

// parentsFile, in the store's root, lists the cgroup parent directories
// nsnet made. A parent is shared: the container that made it may go first,
// so whichever container leaves it empty removes it. The list is changed
// under a lock on the root directory, which also keeps one container's
// mkdir below a parent from racing another's rmdir of it.
const parentsFile = "cgroup-parents"

// withParents runs fn with the store's parent list locked; fn's changes to
// the list are written back.
func (s Store) withParents(fn func(owned map[string]bool) error) error {
	if err := os.MkdirAll(s.Root, 0o711); err != nil {
		return fmt.Errorf("creating state root %s: %w", s.Root, err)
	}
	dir, err := os.Open(s.Root)
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", s.Root, err)
	}
	path := filepath.Join(s.Root, parentsFile)
	owned := map[string]bool{}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" {
			owned[l] = true
		}
	}
	before := listOwned(owned)
	ferr := fn(owned)
	switch after := listOwned(owned); {
	case after == before:
		return ferr
	case after == "":
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return errors.Join(ferr, err)
		}
		return ferr
	default:
		return errors.Join(ferr, writeAtomic(path, []byte(after), 0o600))
	}
}

// listOwned is the parents file's content for owned.
func listOwned(owned map[string]bool) string {
	list := make([]string, 0, len(owned))
	for d := range owned {
		list = append(list, d+"\n")
	}
	sort.Strings(list)
	return strings.Join(list, "")
}

// createCgroup makes the container's cgroup with its limits.
func (s Store) createCgroup(st *State) (m cgroups.Manager, err error) {
	if st.Cgroup == nil {
		return nil, nil
	}
	// Prepare made it when the container is started by the same process.
	if m = st.cgm; m == nil {
		if m, err = st.Cgroup.manager(st.ID, st.Config.resources()); err != nil {
			return nil, err
		}
	}
	err = s.withParents(func(owned map[string]bool) error {
		if err := m.Create(); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", m.Path(), err)
		}
		for _, d := range m.Created() {
			owned[d] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if sk, ok := m.(cgroups.Skipper); ok {
		for _, skip := range sk.Skipped() {
			st.Cgroup.drop(skip.Mountpoint)
			st.Warnings = append(st.Warnings, fmt.Sprintf("running without a cgroup in the hierarchy at %s: %v", skip.Mountpoint, skip.Err))
		}
	}
	st.cgm = m
	return m, nil
}

// drop removes the hierarchy mounted at mountpoint from the recorded
// layout, so that neither the container's /sys/fs/cgroup nor a later exec
// or rm looks for the container's cgroup there.
func (cg *Cgroup) drop(mountpoint string) {
	cg.Layout.V1 = slices.DeleteFunc(slices.Clone(cg.Layout.V1), func(h cgroups.Hierarchy) bool { return h.Mountpoint == mountpoint })
}

// cgroupManager is the driver of a recorded container's cgroup, or an
// error naming why there is none.
func (st *State) cgroupManager() (cgroups.Manager, error) {
	if st.Cgroup == nil {
		return nil, fmt.Errorf("container %s has no cgroup", st.ID)
	}
	if st.cgm != nil {
		return st.cgm, nil
	}
	return st.Cgroup.manager(st.ID, cgroups.Resources{})
}

// noteOOM records whether the kernel's OOM killer struck in the
// container's cgroup; read before the cgroup goes.
func (st *State) noteOOM() {
	m, err := st.cgroupManager()
	if err != nil {
		return
	}
	if n, err := m.OOMKills(); err == nil && n > 0 {
		st.OOMKilled = true
	}
}

// destroyCgroup removes the container's cgroup once its last task is
// gone, and the parents nsnet made that it leaves empty. Tasks killed with
// the container's PID 1 may linger for a moment, and a paused container's
// cannot die until thawed.
func (s Store) destroyCgroup(st *State) error {
	if st.Cgroup == nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// One attempt per lock, so a container that is slow to empty does
		// not hold up the others' creation.
		err := s.withParents(func(owned map[string]bool) error {
			created := make([]string, 0, len(owned))
			for d := range owned {
				created = append(created, d)
			}
			m, err := st.Cgroup.manager(st.ID, cgroups.Resources{}, created...)
			if err != nil {
				return err
			}
			if st.Paused {
				_ = m.Thaw()
				st.Paused = false
			}
			if err := m.Destroy(); err != nil {
				return err
			}
			for d := range owned {
				if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
					delete(owned, d)
				}
			}
			return nil
		})
		if err == nil {
			st.Cgroup, st.cgm = nil, nil
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup of %s: %w", st.ID, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runningCgroup loads the running container ref and its cgroup's driver.
func (s Store) runningCgroup(ref string) (*State, cgroups.Manager, error) {
	st, err := s.Load(ref)
	if err != nil {
		return nil, nil, err
	}
	if !st.Running() {
		return nil, nil, fmt.Errorf("container %s is not running", st.ID)
	}
	m, err := st.cgroupManager()
	if err != nil {
		return nil, nil, err
	}
	return st, m, nil
}

// Stats returns the counters of the running container ref.
func (s Store) Stats(ref string) (*State, cgroups.Stats, error) {
	st, m, err := s.runningCgroup(ref)
	if err != nil {
		return nil, cgroups.Stats{}, err
	}
	stats, err := m.Stats()
	return st, stats, err
}

// Pause freezes every process of the running container ref.
func (s Store) Pause(ref string) error { return s.setFrozen(ref, true) }

// Resume thaws a paused container.
func (s Store) Resume(ref string) error { return s.setFrozen(ref, false) }

func (s Store) setFrozen(ref string, frozen bool) error {
	st, m, err := s.runningCgroup(ref)
	if err != nil {
		return err
	}
	switch {
	case st.Paused == frozen && frozen:
		return fmt.Errorf("container %s is already paused", st.ID)
	case st.Paused == frozen:
		return fmt.Errorf("container %s is not paused", st.ID)
	case frozen:
		err = m.Freeze()
	default:
		err = m.Thaw()
	}
	if err != nil {
		return err
	}
	st.Paused = frozen
	return s.save(st)
}

// Update changes the limits of the running container ref: the fields of r
// that are set replace the recorded ones.
func (s Store) Update(ref string, r cgroups.Resources) error {
	st, m, err := s.runningCgroup(ref)
	if err != nil {
		return err
	}
	merged := st.Config.Resources.Merge(r)
	if err := checkPidsRoom(merged.PidsLimit, st.Config.Init); err != nil {
		return err
	}
	if err := m.Set(merged); err != nil {
		return fmt.Errorf("updating %s: %w", st.ID, err)
	}
	st.Config.Resources = merged
	return s.save(st)
}
