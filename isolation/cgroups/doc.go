// Package cgroups puts a container into its own cgroup and controls it there:
// resource limits, statistics, freezing and removal, on cgroup v1 (one
// hierarchy per controller, including hybrid hosts where an empty v2
// hierarchy is mounted next to them) and on cgroup v2, either by writing
// cgroupfs itself or (Config.Driver "systemd", v2 only) through a transient
// systemd scope with Delegate=yes, whose directory it then writes the same
// way. Device allow-lists use the v1 devices controller or a v2 eBPF
// program. On v1 the container also gets a cgroup in systemd's named
// hierarchy (name=systemd), as runc gives one; it holds no controllers, so
// one that cannot be written is skipped (Skipper) instead of failing.
//
// Guarantees:
//   - Every limit is validated before any directory is created or any file
//     written, so a bad value leaves the host untouched.
//   - With cgroupfs, the container's cgroup sits below the caller's own
//     cgroup in every hierarchy (<own>/<parent>/<id>), unless the caller
//     names an absolute parent, which is then taken from the hierarchy's
//     root. With systemd it is <slice path>/nsnet-<id>.scope.
//   - Control files are only opened for writing, never created: a missing
//     file means a missing controller and is reported as such.
//   - Destroy removes only directories this package created, or, with
//     Config.RemoveEmptyParents, parent levels of the container's cgroup
//     it leaves empty.
//
// Detect reads the host's layout from /proc/self/mountinfo and
// /proc/self/cgroup; New picks the driver that fits it.
package cgroups
