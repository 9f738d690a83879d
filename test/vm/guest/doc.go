// Package guest holds the VM harness's own smoke tests. Run by vmtest
// inside the test VM (NSNET_IN_VM=1), they show that the guest is what the
// harness promises — a pure cgroup v2 hierarchy with the cpu, cpuset, io,
// memory and pids controllers, two CPUs, a scratch virtio disk and, in
// systemd mode, systemd as PID 1 with a working D-Bus system bus — and that
// limits really bite: a memory hog is OOM-killed, a fork loop hits
// pids.max. With NSNET_VM_NO_LIMITS=1 (vmtest -negative) the limits are not
// set and those tests must fail. Outside the VM every test skips.
package guest
