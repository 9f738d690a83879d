// Package caps names Linux capabilities, computes a container's capability
// set from the default set and --cap-add/--cap-drop, and applies it to the
// calling thread just before execve.
//
// The default set is Docker's and runc's default minus CAP_MKNOD. Like
// runc's, nsnet's device allow-list refuses nodes outside the default
// devices, and nsnet also mounts everything writable nodev, so MKNOD would
// buy a container nothing but nodes it cannot open; a host without cgroups
// (no allow-list) keeps only nodev. `--cap-add MKNOD` gives it back.
package caps

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"golang.org/x/sys/unix"
)

// Set is a capability bit set: bit n is capability number n.
type Set uint64

// names maps capability numbers to their names without the CAP_ prefix.
var names = map[int]string{
	unix.CAP_CHOWN:              "CHOWN",
	unix.CAP_DAC_OVERRIDE:       "DAC_OVERRIDE",
	unix.CAP_DAC_READ_SEARCH:    "DAC_READ_SEARCH",
	unix.CAP_FOWNER:             "FOWNER",
	unix.CAP_FSETID:             "FSETID",
	unix.CAP_KILL:               "KILL",
	unix.CAP_SETGID:             "SETGID",
	unix.CAP_SETUID:             "SETUID",
	unix.CAP_SETPCAP:            "SETPCAP",
	unix.CAP_LINUX_IMMUTABLE:    "LINUX_IMMUTABLE",
	unix.CAP_NET_BIND_SERVICE:   "NET_BIND_SERVICE",
	unix.CAP_NET_BROADCAST:      "NET_BROADCAST",
	unix.CAP_NET_ADMIN:          "NET_ADMIN",
	unix.CAP_NET_RAW:            "NET_RAW",
	unix.CAP_IPC_LOCK:           "IPC_LOCK",
	unix.CAP_IPC_OWNER:          "IPC_OWNER",
	unix.CAP_SYS_MODULE:         "SYS_MODULE",
	unix.CAP_SYS_RAWIO:          "SYS_RAWIO",
	unix.CAP_SYS_CHROOT:         "SYS_CHROOT",
	unix.CAP_SYS_PTRACE:         "SYS_PTRACE",
	unix.CAP_SYS_PACCT:          "SYS_PACCT",
	unix.CAP_SYS_ADMIN:          "SYS_ADMIN",
	unix.CAP_SYS_BOOT:           "SYS_BOOT",
	unix.CAP_SYS_NICE:           "SYS_NICE",
	unix.CAP_SYS_RESOURCE:       "SYS_RESOURCE",
	unix.CAP_SYS_TIME:           "SYS_TIME",
	unix.CAP_SYS_TTY_CONFIG:     "SYS_TTY_CONFIG",
	unix.CAP_MKNOD:              "MKNOD",
	unix.CAP_LEASE:              "LEASE",
	unix.CAP_AUDIT_WRITE:        "AUDIT_WRITE",
	unix.CAP_AUDIT_CONTROL:      "AUDIT_CONTROL",
	unix.CAP_SETFCAP:            "SETFCAP",
	unix.CAP_MAC_OVERRIDE:       "MAC_OVERRIDE",
	unix.CAP_MAC_ADMIN:          "MAC_ADMIN",
	unix.CAP_SYSLOG:             "SYSLOG",
	unix.CAP_WAKE_ALARM:         "WAKE_ALARM",
	unix.CAP_BLOCK_SUSPEND:      "BLOCK_SUSPEND",
	unix.CAP_AUDIT_READ:         "AUDIT_READ",
	unix.CAP_PERFMON:            "PERFMON",
	unix.CAP_BPF:                "BPF",
	unix.CAP_CHECKPOINT_RESTORE: "CHECKPOINT_RESTORE",
}

// ErrUnknown is returned for a capability name this package does not know.
var ErrUnknown = errors.New("unknown capability")

// All holds every capability this package knows.
var All = func() Set {
	var s Set
	for n := range names {
		s |= 1 << n
	}
	return s
}()

// Default is the set a container gets unless told otherwise.
var Default = Of(
	unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER,
	unix.CAP_NET_RAW, unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP,
	unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT,
	unix.CAP_KILL, unix.CAP_AUDIT_WRITE,
)

// Of returns the set holding the given capability numbers.
func Of(caps ...int) Set {
	var s Set
	for _, c := range caps {
		s |= 1 << c
	}
	return s
}

// Has reports whether capability c is in s.
func (s Set) Has(c int) bool { return c >= 0 && c < 64 && s&(1<<c) != 0 }

// Names lists the capabilities in s as CAP_ names, in numeric order.
func (s Set) Names() []string {
	out := make([]string, 0, bits.OnesCount64(uint64(s)))
	for c := 0; c < 64; c++ {
		if s.Has(c) {
			if n, ok := names[c]; ok {
				out = append(out, "CAP_"+n)
			} else {
				out = append(out, fmt.Sprintf("CAP_%d", c))
			}
		}
	}
	return out
}

// String formats s the way /proc/<pid>/status shows CapEff.
func (s Set) String() string { return fmt.Sprintf("%016x", uint64(s)) }

// Parse returns the number of a capability given as "NET_ADMIN",
// "CAP_NET_ADMIN" or "net_admin". Case is folded in ASCII only:
// strings.ToUpper would take "cap_ſys_admin" (a long s) for SYS_ADMIN.
func Parse(name string) (int, error) {
	n := strings.TrimSpace(name)
	if len(n) > 4 && asciiEqualFold(n[:4], "CAP_") {
		n = n[4:]
	}
	for c, cn := range names {
		if asciiEqualFold(cn, n) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknown, name)
}

// asciiEqualFold is strings.EqualFold for ASCII letters only.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Resolve computes a container's set the way Docker does: "ALL" in drop
// starts from nothing, "ALL" in add starts from every capability, then
// single additions and drops apply. Naming one capability in both lists is
// an error because the intent is unclear. privileged returns All.
func Resolve(privileged bool, add, drop []string) (Set, error) {
	if privileged {
		return All, nil
	}
	addAll, adds, err := parseList(add)
	if err != nil {
		return 0, fmt.Errorf("cap-add: %w", err)
	}
	dropAll, drops, err := parseList(drop)
	if err != nil {
		return 0, fmt.Errorf("cap-drop: %w", err)
	}
	if both := adds & drops; both != 0 {
		return 0, fmt.Errorf("%s both added and dropped", strings.Join(both.Names(), ", "))
	}
	s := Default
	if dropAll {
		s = 0
	}
	if addAll {
		s = All
	}
	return (s | adds) &^ drops, nil
}

func parseList(list []string) (all bool, s Set, err error) {
	for _, name := range list {
		if strings.EqualFold(strings.TrimSpace(name), "ALL") {
			all = true
			continue
		}
		c, err := Parse(name)
		if err != nil {
			return false, 0, err
		}
		s |= 1 << c
	}
	return all, s, nil
}
