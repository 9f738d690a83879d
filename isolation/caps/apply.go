package caps

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// LastCap returns the highest capability number the running kernel knows,
// probing the bounding set because /proc may not be mounted yet.
func LastCap() (int, error) {
	for c := 0; c < 64; c++ {
		if _, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) && c > 0 {
				return c - 1, nil
			}
			return 0, fmt.Errorf("reading bounding set entry %d: %w", c, err)
		}
	}
	return 63, nil
}

// Apply reduces the calling thread to s: the bounding set loses every other
// capability, the ambient set is cleared, permitted and effective become s
// (as far as the kernel knows them) and inheritable becomes empty.
//
// Capabilities belong to a thread, not a process, so the caller must hold
// runtime.LockOSThread and execve from the same thread. A root execve then
// yields exactly s in the bounding, permitted and effective sets. Inheritable
// stays empty because a non-empty one lets a non-root user in the container
// gain capabilities from files with inheritable file capabilities
// (CVE-2022-24769).
func Apply(s Set) error {
	s, err := restrict(s)
	if err != nil {
		return err
	}
	hdr, data := capsetArgs(s)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("setting capabilities %s: %w", s, err)
	}
	return nil
}

// restrict drops every capability outside s from the calling thread's
// bounding set and clears its ambient set. It returns s without the
// capabilities the kernel does not know, for capsetArgs.
func restrict(s Set) (Set, error) {
	last, err := LastCap()
	if err != nil {
		return 0, err
	}
	s &= Set(1<<(last+1) - 1)
	// The bounding set goes first: dropping needs CAP_SETPCAP, which capset
	// afterwards may remove.
	for c := 0; c <= last; c++ {
		if s.Has(c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return 0, fmt.Errorf("dropping %s from the bounding set: %w", Of(c).Names()[0], err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return 0, fmt.Errorf("clearing the ambient set: %w", err)
	}
	return s, nil
}

// ApplyAllThreads is Apply for a process that goes on running Go code
// instead of executing: the calling thread loses its bounding and ambient
// capabilities as with Apply, and every thread of the Go runtime, the
// calling one included, gets the same permitted, effective and (empty)
// inheritable sets in one capset, so no thread keeps a capability the
// caller gave up. The other threads' ambient sets empty themselves (the
// kernel keeps ambient a subset of inheritable); their bounding sets stay
// as they were, as dropping them takes one stop-the-world per capability:
// with permitted reduced and no_new_privs set on every thread (the
// caller's job, before), no thread can gain a capability back, so the
// bounding set caps nothing more. A process that forks must do so from the
// calling thread, whose bounding set its children inherit.
//
// In a binary that uses cgo it fails with ENOTSUP, having changed the
// calling thread's bounding and ambient sets only.
func ApplyAllThreads(s Set) error {
	s, err := restrict(s)
	if err != nil {
		return err
	}
	hdr, data := capsetArgs(s)
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno != 0 {
		return fmt.Errorf("setting capabilities %s on every thread: %w", s, errno)
	}
	return nil
}

// capsetArgs are the capset arguments making s the permitted and
// effective sets and emptying the inheritable set.
func capsetArgs(s Set) (unix.CapUserHeader, [2]unix.CapUserData) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for i := range data {
		word := uint32(uint64(s) >> (32 * i))
		data[i].Effective = word
		data[i].Permitted = word
	}
	return hdr, data
}
