package cgroups

import "path/filepath"

// Entry says how a new process can start inside a container's cgroup
// rather than be moved there by Apply. Moving a whole process makes the
// kernel take a global lock whose write side waits for an RCU grace period
// (~10 ms); a process cloned into a v2 cgroup, or a thread that moves
// itself in v1, does not.
type Entry struct {
	// Dir is the v2 cgroup to clone the process into (CLONE_INTO_CGROUP).
	Dir string
	// Tasks are v1 "tasks" files: each thread of the process writes "0"
	// into every one, moving itself.
	Tasks []string
}

// Entrant is implemented by the drivers whose cgroup a process can enter
// that way, once Create has made it. The systemd driver is not one: the
// scope is started around the process's PID.
type Entrant interface {
	Entry() Entry
}

func (m *v2Manager) Entry() Entry { return Entry{Dir: m.leaf} }

func (m *v1Manager) Entry() Entry {
	var e Entry
	for _, l := range m.joined() {
		e.Tasks = append(e.Tasks, filepath.Join(l, "tasks"))
	}
	return e
}

// Skip is a hierarchy a driver's Create left out, and why.
type Skip struct {
	// Mountpoint is the hierarchy's, as in the Layout.
	Mountpoint string
	Err        error
}

// Skipper is implemented by the drivers whose Create may leave out a
// hierarchy without controllers (v1's name=systemd) rather than fail:
// such a hierarchy only groups processes. The caller drops the skipped
// hierarchies from the layout it records and mounts in the container, so
// that a later Manager (nsnet exec, rm) does not look for the cgroup there.
type Skipper interface {
	Skipped() []Skip
}
