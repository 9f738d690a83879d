package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Mode is how cgroups are mounted on a host.
type Mode int

const (
	// ModeUnified is a pure cgroup v2 host.
	ModeUnified Mode = iota + 1
	// ModeLegacy is a cgroup v1 host without a v2 mount.
	ModeLegacy
	// ModeHybrid has v1 controller hierarchies and a v2 mount next to them
	// (systemd's /sys/fs/cgroup/unified). The controllers live in v1, so the
	// v1 driver is used.
	ModeHybrid
)

func (m Mode) String() string {
	switch m {
	case ModeUnified:
		return "unified"
	case ModeLegacy:
		return "legacy"
	case ModeHybrid:
		return "hybrid"
	}
	return "unknown"
}

// Hierarchy is one mounted cgroup hierarchy.
type Hierarchy struct {
	// Controllers bound to a v1 hierarchy; empty for v2 and for a named
	// v1 hierarchy.
	Controllers []string
	// Name is a named v1 hierarchy's name ("systemd" for name=systemd),
	// one that holds no controllers; empty otherwise.
	Name string `json:",omitempty"`
	// Mountpoint is where the hierarchy is mounted.
	Mountpoint string
	// Root is the cgroup the mount shows at Mountpoint (not "/" when a
	// subtree is bind-mounted, as inside containers).
	Root string
	// Own is the caller's cgroup in this hierarchy, from /proc/self/cgroup.
	Own string
}

// dir maps a cgroup path of this hierarchy to a directory below prefix+Mountpoint.
func (h Hierarchy) dir(prefix, cgroupPath string) (string, error) {
	rel, ok := within(h.Root, cgroupPath)
	if !ok {
		return "", fmt.Errorf("cgroup %s is outside the subtree %s mounted at %s", cgroupPath, h.Root, h.Mountpoint)
	}
	return path.Join(prefix+h.Mountpoint, rel), nil
}

// within reports p relative to root when p is root or below it.
func within(root, p string) (string, bool) {
	root, p = path.Clean("/"+root), path.Clean("/"+p)
	if root == "/" {
		return strings.TrimPrefix(p, "/"), true
	}
	if p == root {
		return "", true
	}
	if strings.HasPrefix(p, root+"/") {
		return p[len(root)+1:], true
	}
	return "", false
}

// Layout is the set of hierarchies the drivers work on.
type Layout struct {
	Mode Mode
	// V1 lists the controller hierarchies (legacy and hybrid hosts) and,
	// last, the name=systemd hierarchy when one is mounted.
	V1 []Hierarchy
	// V2 is the unified hierarchy (unified hosts only).
	V2 *Hierarchy
}

// v1Controllers are the controller names a v1 mount may carry; other mount
// options (rw, relatime, name=systemd, ...) are not controllers.
var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "devices": true,
	"freezer": true, "net_cls": true, "net_prio": true, "blkio": true,
	"perf_event": true, "hugetlb": true, "pids": true, "rdma": true, "misc": true,
}

// NamedSystemd is the name of the named v1 hierarchy systemd keeps its
// process tracking in on legacy and hybrid hosts. Runtimes give containers
// a cgroup there too, and a systemd inside a container wants it mounted.
const NamedSystemd = "systemd"

// ErrNoCgroups is returned when no usable cgroup hierarchy is mounted.
var ErrNoCgroups = errors.New("no cgroup hierarchy mounted")

// DetectHost reads the calling process's view of the host.
func DetectHost() (Layout, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Layout{}, fmt.Errorf("reading mount table: %w", err)
	}
	defer mi.Close()
	cg, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return Layout{}, fmt.Errorf("reading own cgroup: %w", err)
	}
	defer cg.Close()
	return Detect(mi, cg)
}

// Detect builds the layout from the contents of /proc/self/mountinfo and
// /proc/self/cgroup.
func Detect(mountinfo, selfCgroup io.Reader) (Layout, error) {
	mounts, err := parseMountinfo(mountinfo)
	if err != nil {
		return Layout{}, err
	}
	own, ownV2, err := ParseSelfCgroup(selfCgroup)
	if err != nil {
		return Layout{}, err
	}
	var l Layout
	var named *Hierarchy
	// seen maps a controller to its hierarchy's index in l.V1.
	seen := map[string]int{}
	for _, m := range mounts {
		if m.v2 {
			if l.V2 == nil {
				h := Hierarchy{Mountpoint: m.mountpoint, Root: m.root, Own: ownV2}
				l.V2 = &h
			}
			continue
		}
		if len(m.controllers) == 0 {
			// Of the named hierarchies only systemd's matters: it is the
			// one runtimes place containers in and a systemd inside
			// expects. Others are private bookkeeping of whatever tool
			// mounted them, not nsnet's to add directories to.
			p, ok := own["name="+NamedSystemd]
			if m.name == NamedSystemd && ok && named == nil {
				named = &Hierarchy{Name: NamedSystemd, Mountpoint: m.mountpoint, Root: m.root, Own: p}
			}
			continue
		}
		if i, ok := seen[m.controllers[0]]; ok && slices.Equal(l.V1[i].Controllers, m.controllers) {
			// A second mount of a hierarchy already found.
			continue
		}
		for _, c := range m.controllers {
			if i, ok := seen[c]; ok {
				return Layout{}, fmt.Errorf("controller %s is mounted in two hierarchies, at %s and %s", c, l.V1[i].Mountpoint, m.mountpoint)
			}
		}
		p, ok := own[m.controllers[0]]
		if !ok {
			return Layout{}, fmt.Errorf("controllers %s are mounted at %s but missing from /proc/self/cgroup", strings.Join(m.controllers, ","), m.mountpoint)
		}
		for _, c := range m.controllers {
			seen[c] = len(l.V1)
		}
		l.V1 = append(l.V1, Hierarchy{Controllers: m.controllers, Mountpoint: m.mountpoint, Root: m.root, Own: p})
	}
	switch {
	case len(l.V1) > 0 && l.V2 != nil:
		l.Mode = ModeHybrid
		l.V2 = nil
	case len(l.V1) > 0:
		l.Mode = ModeLegacy
	case l.V2 != nil:
		if ownV2 == "" {
			return Layout{}, errors.New("cgroup v2 is mounted but /proc/self/cgroup has no 0:: line")
		}
		l.Mode = ModeUnified
	default:
		return Layout{}, ErrNoCgroups
	}
	if named != nil && l.Mode != ModeUnified {
		l.V1 = append(l.V1, *named)
	}
	return l, nil
}

type cgroupMount struct {
	mountpoint, root string
	v2               bool
	controllers      []string
	// name is a v1 mount's name= option.
	name string
}

// parseMountinfo keeps the cgroup and cgroup2 mounts of a mountinfo table
// (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func parseMountinfo(r io.Reader) ([]cgroupMount, error) {
	var out []cgroupMount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 6 || len(tail) < 3 {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, line)
		}
		m := cgroupMount{root: unescapeMount(fields[3]), mountpoint: unescapeMount(fields[4])}
		switch tail[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			for _, o := range strings.Split(tail[2], ",") {
				if v1Controllers[o] && !slices.Contains(m.controllers, o) {
					m.controllers = append(m.controllers, o)
				}
				if n, ok := strings.CutPrefix(o, "name="); ok {
					m.name = n
				}
			}
		default:
			continue
		}
		// Other mounts may show a root that is no path (nsfs's
		// "net:[4026532200]"); a cgroup mount's paths are joined to
		// cgroup paths, so they must be absolute.
		if !strings.HasPrefix(m.root, "/") || !strings.HasPrefix(m.mountpoint, "/") {
			return nil, fmt.Errorf("mountinfo line %d: %s mount with a relative path: %q", n, tail[0], line)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMount undoes the kernel's octal escaping of space, tab, newline
// and backslash in mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseSelfCgroup reads /proc/self/cgroup content: v1 lines
// "N:ctrl1,ctrl2:/path" give a path per controller, the v2 line "0::/path"
// gives ownV2. A named hierarchy's path is kept under "name=NAME", as the
// line names it ("name=systemd").
func ParseSelfCgroup(r io.Reader) (own map[string]string, ownV2 string, err error) {
	own = map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			return nil, "", fmt.Errorf("/proc/self/cgroup line %d: malformed: %q", n, line)
		}
		if parts[0] == "0" && parts[1] == "" {
			ownV2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if v1Controllers[c] || strings.HasPrefix(c, "name=") {
				own[c] = parts[2]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, "", fmt.Errorf("reading /proc/self/cgroup: %w", err)
	}
	return own, ownV2, nil
}
