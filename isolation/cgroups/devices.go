package cgroups

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DeviceType is the kind of device a rule names.
type DeviceType byte

const (
	// DeviceAll matches every device; a rule of this type must be "a *:* rwm".
	DeviceAll DeviceType = 'a'
	// DeviceBlock matches block devices.
	DeviceBlock DeviceType = 'b'
	// DeviceChar matches character devices.
	DeviceChar DeviceType = 'c'
)

// Wildcard as a DeviceRule's Major or Minor matches every number ("*").
const Wildcard int64 = -1

// The kernel's dev_t has 12 bits of major and 20 of minor; a rule beyond
// them could never match and is surely a typo.
const (
	maxMajor = 1<<12 - 1
	maxMinor = 1<<20 - 1
)

// DeviceRule is one line of a device allow-list, in the kernel's v1
// devices-controller syntax ("c 1:3 rwm").
//
// A non-nil Resources.Devices is read as the v1 kernel applies such lines
// one after the other, restricted to the part that means the same on cgroup
// v1 and on v2's eBPF filter: the list starts from "everything denied", a
// deny rule may only be "a *:* rwm" (which drops every rule before it), and
// every other rule allows an access. A request is allowed when one rule
// covers its device and all of its access. Rules for the same type and
// numbers add up ("c 1:3 r" and "c 1:3 w" allow "rw"), rules with other
// numbers do not ("c 1:* r" and "c 1:3 w" allow 1:3 no "rw" open), as in
// the v1 kernel.
type DeviceRule struct {
	Allow bool
	Type  DeviceType
	// Major and Minor are device numbers or Wildcard.
	Major, Minor int64
	// Access combines r (read), w (write) and m (mknod).
	Access string
}

// String is the rule as the v1 kernel and --device-cgroup-rule write it,
// without its allow/deny sense.
func (d DeviceRule) String() string {
	return fmt.Sprintf("%c %s:%s %s", d.Type, devNum(d.Major), devNum(d.Minor), d.Access)
}

func devNum(n int64) string {
	if n == Wildcard {
		return "*"
	}
	return strconv.FormatInt(n, 10)
}

func (d DeviceRule) allowsAll() bool { return d.Allow && d.Type == DeviceAll }
func (d DeviceRule) deniesAll() bool { return !d.Allow && d.Type == DeviceAll }

// DefaultDevices is the allow-list of an unprivileged container: mknod of
// any device (creating a node grants no access to it), and read, write and
// mknod of null, zero, full, random, urandom, tty, console, ptmx and the
// pseudo-terminals.
//
// /dev/net/tun (c 10:200) is left out on purpose. runc dropped it in 1.2.0
// as an early-Docker accident and put it back in 1.2.4 only because
// existing users and orchestrators without a way to add device rules broke;
// nsnet has no such users and has --device-cgroup-rule 'c 10:200 rwm' for
// the containers that need it.
func DefaultDevices() []DeviceRule {
	rules := []DeviceRule{
		{Allow: false, Type: DeviceAll, Major: Wildcard, Minor: Wildcard, Access: "rwm"},
		{Allow: true, Type: DeviceChar, Major: Wildcard, Minor: Wildcard, Access: "m"},
		{Allow: true, Type: DeviceBlock, Major: Wildcard, Minor: Wildcard, Access: "m"},
	}
	for _, d := range [][2]int64{
		{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, // null, zero, full, random, urandom
		{5, 0}, {5, 1}, {5, 2}, // tty, console, ptmx
		{136, Wildcard}, // pts
	} {
		rules = append(rules, DeviceRule{Allow: true, Type: DeviceChar, Major: d[0], Minor: d[1], Access: "rwm"})
	}
	return rules
}

// ParseDeviceRule reads Docker's --device-cgroup-rule syntax, "TYPE
// MAJOR:MINOR ACCESS" such as "c 1:3 rwm" or "c 136:* rw", into an allow
// rule. The access letters come back in the order "rwm".
func ParseDeviceRule(s string) (DeviceRule, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return DeviceRule{}, invalid("device rule %q: want TYPE MAJOR:MINOR ACCESS, as in 'c 1:3 rwm'", s)
	}
	if len(f[0]) != 1 {
		return DeviceRule{}, invalid("device rule %q: type %q is not a, b or c", s, f[0])
	}
	maj, min, ok := strings.Cut(f[1], ":")
	if !ok {
		return DeviceRule{}, invalid("device rule %q: %q is not MAJOR:MINOR", s, f[1])
	}
	r := DeviceRule{Allow: true, Type: DeviceType(f[0][0]), Access: f[2]}
	var err error
	if r.Major, err = parseDevNum(maj); err != nil {
		return DeviceRule{}, invalid("device rule %q: major: %v", s, err)
	}
	if r.Minor, err = parseDevNum(min); err != nil {
		return DeviceRule{}, invalid("device rule %q: minor: %v", s, err)
	}
	if err := r.validate(); err != nil {
		return DeviceRule{}, err
	}
	r.Access = canonicalAccess(r.Access)
	return r, nil
}

func parseDevNum(s string) (int64, error) {
	if s == "*" {
		return Wildcard, nil
	}
	// ParseUint alone would take "+3"; the kernel and Docker take digits only.
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a number or *", s)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return int64(n), nil
}

func canonicalAccess(a string) string {
	var b strings.Builder
	for _, c := range "rwm" {
		if strings.ContainsRune(a, c) {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// validate checks one rule on its own.
func (d DeviceRule) validate() error {
	if d.Type != DeviceAll && d.Type != DeviceBlock && d.Type != DeviceChar {
		return invalid("device rule %q: type %q is not a, b or c", d, rune(d.Type))
	}
	if d.Access == "" || strings.Trim(d.Access, "rwm") != "" || len(canonicalAccess(d.Access)) != len(d.Access) {
		return invalid("device rule %q: access %q is not a combination of r, w and m", d, d.Access)
	}
	for _, n := range []struct {
		what string
		v    int64
		max  int64
	}{{"major", d.Major, maxMajor}, {"minor", d.Minor, maxMinor}} {
		if n.v != Wildcard && (n.v < 0 || n.v > n.max) {
			return invalid("device rule %q: %s %d is outside 0..%d", d, n.what, n.v, n.max)
		}
	}
	// The v1 kernel ignores everything after "a", so anything narrower
	// would silently mean all devices there.
	if d.Type == DeviceAll && (d.Major != Wildcard || d.Minor != Wildcard || len(d.Access) != 3) {
		return invalid("device rule %q: type a covers every device; write 'a *:* rwm'", d)
	}
	return nil
}

// validateDevices checks a whole allow-list.
func validateDevices(rules []DeviceRule) error {
	for _, d := range rules {
		if err := d.validate(); err != nil {
			return err
		}
		// A v1 deny line only trims an exception with exactly the same
		// numbers while a filter would apply it to every device it
		// matches, so the two drivers would disagree about it.
		if !d.Allow && !d.deniesAll() {
			return invalid("device rule deny %q: only 'a *:* rwm' can be denied; leave the device out of the allow-list instead", d)
		}
	}
	return nil
}

// effectiveDevices is what a validated list allows: the allow rules after
// the last deny-all, with the access of rules for the same type and numbers
// merged the way the v1 kernel merges them, or the single allow-all rule
// when there is one.
func effectiveDevices(rules []DeviceRule) []DeviceRule {
	start := 0
	for i, d := range rules {
		if d.deniesAll() {
			start = i + 1
		}
	}
	var out []DeviceRule
	at := map[DeviceRule]int{}
	for _, d := range rules[start:] {
		if d.allowsAll() {
			return []DeviceRule{d}
		}
		key := d
		key.Access = ""
		i, seen := at[key]
		if !seen {
			at[key] = len(out)
			out = append(out, d)
			continue
		}
		out[i].Access = canonicalAccess(out[i].Access + d.Access)
	}
	return out
}

// setDevicesV1 writes the allow-list to a v1 devices cgroup. Denying "a"
// first empties whatever the new cgroup copied from its parent and is
// allowed under any parent, where "a" in devices.allow fails when the
// parent restricts; so "a" is only allowed when the list itself allows all.
// Between the deny and the last allow the container can open no device: on
// a running container (Set) an open racing the update may fail with EPERM.
func setDevicesV1(dir string, rules []DeviceRule) error {
	if err := writeLines(dir, "devices.deny", []string{"a"}); err != nil {
		return err
	}
	var allow []string
	for _, d := range effectiveDevices(rules) {
		allow = append(allow, d.String())
	}
	return writeLines(dir, "devices.allow", allow)
}

// writeLines writes each line with its own write(2): the devices files take
// one rule per write. O_APPEND instead of O_TRUNC makes no difference on
// cgroupfs but keeps every rule in a plain file, which the fake trees of
// the tests rely on.
func writeLines(dir, name string, lines []string) error {
	p := path.Join(dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", p, err)
	}
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			f.Close()
			return fmt.Errorf("writing %q to %s: %w", l, p, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing to %s: %w", p, err)
	}
	return nil
}
