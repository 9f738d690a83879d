// Package vm runs nsnet's test binaries inside a throw-away qemu VM that has
// its own Debian kernel and a pure cgroup v2 hierarchy, so the cgroup v2 and
// systemd code paths get real kernels even on a cgroup v1 host.
//
// The host side finds (and caches) an uncompressed kernel for a PVH boot,
// packs busybox, the needed kernel modules and the test binaries into a newc
// initramfs, and boots it with no network, always under timeout(1). In the
// default mode the initramfs itself is the guest's root (copied to a tmpfs
// so pivot_root works) and the root cgroup enables every controller for its
// children; in systemd mode it only loads modules and switches to a cached
// Debian image whose systemd runs the tests from a unit (Delegate=yes).
//
// Inside the guest, the runner program (./runner) executes every planned
// test binary as root, each in its own working directory (with a copy of
// the package's testdata), and writes their output between framing lines
// to the second serial port; the host reads that stream (Stream) and
// judges the run (Report.Failures).
//
// The tests see this environment:
//
//	NSNET_IN_VM=1            only set in the VM: guard VM-only tests with it
//	NSNET_VM_MODE            "busybox" (init is a shell script) or "systemd"
//	NSNET_VM_DISK            a 64 MiB virtio disk (/dev/vdX) for io.max tests
//	NSNET_VM_DISK_MAJMIN     its major:minor
//	NSNET_VM_NO_LIMITS=1     negative control (vmtest -negative): tests that
//	                         honour it set no limits, and must then fail
//	NSNET_TEST_BIN_DIR       prebuilt nsnet and plugins for test/harness
//	XDG_CACHE_HOME           holds the reference plugins and cnitool
//
// and busybox (or, in systemd mode, Debian's tools plus busybox) on PATH.
package vm
