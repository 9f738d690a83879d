// Package isolation runs a command in a container: new UTS, IPC, PID, mount
// and cgroup namespaces, a new or joined network namespace, optionally a
// user namespace, its own root filesystem, and by default the hardening of
// runc's default spec (masked and read-only kernel paths, a small capability
// set, no_new_privs, no inherited descriptors).
//
// Go's runtime is multi-threaded, and unshare/setns on one of its threads
// would leave the others behind, so the work is done by a re-executed copy
// of the calling binary: Start clones it straight into the new namespaces
// and the container's cgroup (CLONE_INTO_CGROUP on v2; on v1 from a thread
// that entered the cgroup first, see fork.go), it builds the container and
// execs the command or becomes the built-in init (package initproc). That
// copy recognises itself in Reexec, which main must call first. The
// handshake between the two is drawn in sync.go.
//
// Exec runs a further command in a running container: a go-between joins
// the container's namespaces from outside, or, in a container with an exec
// socket (needed for its user namespace, which a Go process cannot join),
// the container's init starts the command as its child (initexec.go).
//
// Subpackages: rootfs builds the root filesystem, caps computes and applies
// capability sets, initproc is the PID 1.
package isolation
