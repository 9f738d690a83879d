package isolation

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation/caps"
	"github.com/nsnet/nsnet/isolation/rootfs"
)

// Spec describes a container: what to run and how it is isolated. The zero
// value of every field but Args is a safe default.
type Spec struct {
	// Args is the command and its arguments; Args[0] is looked up in the
	// container's PATH unless it holds a slash.
	Args []string
	// Env is the command's environment. PATH, HOME (/root) and HOSTNAME
	// are added when missing.
	Env []string
	// Cwd is the working directory inside the container, created when
	// missing; default "/".
	Cwd string
	// Tty gives the command a terminal: a pty of the container's devpts,
	// also bound at /dev/console, relayed to Options' stdio. A terminal on
	// Stdin is put in raw mode and its window size followed until Wait
	// returns.
	Tty bool
	// Hostname is set in the new UTS namespace; empty keeps the copy of
	// the host's name the namespace starts with.
	Hostname string

	// Rootfs is the host directory to use as the root filesystem. Empty
	// means the embedded default: a throw-away tmpfs root with read-only
	// binds of the host's /usr, /bin, /sbin, /lib*, /etc.
	Rootfs string
	// ReadOnlyRoot makes / read-only (mounts below it keep their mode).
	ReadOnlyRoot bool
	// Volumes are bind-mounted in order, after the standard mounts.
	Volumes []Volume
	// EtcFiles maps a path under /etc in the container (/etc/hostname,
	// /etc/hosts, /etc/resolv.conf) to a host file bound over it, so the
	// caller can keep writing the file while the container runs.
	EtcFiles map[string]string
	// Propagation of the container's mounts: "private" (default) or
	// "slave" (mounts the host makes later show up inside).
	Propagation string

	// NetNS is "" for a new network namespace with only loopback (up),
	// "host" to share the caller's, or the path of a network namespace to
	// join (e.g. /run/netns/NAME or /proc/PID/ns/net).
	NetNS string
	// UserNS runs the container in a new user namespace. Without UIDMap
	// and GIDMap, uid and gid 0 inside map to the caller's.
	UserNS         bool
	UIDMap, GIDMap []IDMap

	// Privileged keeps every capability and skips the masked and
	// read-only paths; no_new_privs stays on.
	Privileged bool
	// CapAdd and CapDrop adjust the default capability set ("NET_ADMIN",
	// "CAP_NET_ADMIN" or "ALL"), as Docker's --cap-add/--cap-drop do.
	CapAdd, CapDrop []string
	// Init runs nsnet's built-in init as PID 1 with the command as its
	// child: signals are forwarded and orphans reaped. Without it the
	// command is PID 1 and the kernel drops signals it does not handle.
	Init bool
	// ExecSocket, with Init, is a host path where Start makes a unix
	// socket on which the init starts commands for Exec (ExecSpec.Socket).
	// Such a command is a child of the init, so it has every namespace of
	// the container, its user namespace included, which no Go process can
	// join from outside. Wait removes the socket.
	ExecSocket string
	// Sysctls are written inside the container before /proc/sys becomes
	// read-only; only keys namespaced by a namespace the container owns
	// are accepted (IPC keys, net.* unless NetNS is "host",
	// kernel.domainname).
	Sysctls map[string]string
	// Cgroupfs names the cgroup hierarchies mounted at /sys/fs/cgroup,
	// read-only unless Privileged. Through the container's cgroup
	// namespace each shows the container's own cgroup as its root. The
	// zero value leaves /sys/fs/cgroup empty.
	Cgroupfs Cgroupfs
}

// Cgroupfs is either the unified hierarchy or the host's v1 hierarchies.
// A user-namespaced container mounts them as the owner of its cgroup
// namespace; where the kernel refuses that, it runs without.
type Cgroupfs struct {
	// V2 mounts cgroup2 at /sys/fs/cgroup.
	V2 bool
	// V1 hierarchies are each mounted on a directory of a tmpfs at
	// /sys/fs/cgroup, with a symlink for each controller of a co-mounted
	// hierarchy.
	V1 []CgroupHierarchy
}

// CgroupHierarchy is a cgroup v1 hierarchy.
type CgroupHierarchy struct {
	// Dir is its directory's name in /sys/fs/cgroup ("cpu,cpuacct").
	Dir string
	// Controllers are all the controllers bound to the hierarchy; none
	// for a named one.
	Controllers []string
	// Name is a named hierarchy's name (name=systemd's "systemd"), which
	// holds no controllers.
	Name string
}

// Volume is a host path bound into the container.
type Volume struct {
	Source, Target string
	ReadOnly       bool
}

// IDMap is one line of uid_map or gid_map.
type IDMap struct {
	ContainerID, HostID, Size int
}

// ErrInvalidSpec marks a Spec that Start refuses before creating anything.
var ErrInvalidSpec = errors.New("invalid container spec")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// ParseVolume parses "HOST:CONTAINER[:ro|:rw]". HOST is made absolute.
func ParseVolume(s string) (Volume, error) {
	parts := strings.Split(s, ":")
	var v Volume
	switch {
	case len(parts) == 3 && (parts[2] == "ro" || parts[2] == "rw"):
		v.ReadOnly = parts[2] == "ro"
	case len(parts) != 2:
		return v, invalid("volume %q: want HOST:CONTAINER[:ro]", s)
	}
	if parts[0] == "" || parts[1] == "" {
		return v, invalid("volume %q: want HOST:CONTAINER[:ro]", s)
	}
	src, err := filepath.Abs(parts[0])
	if err != nil {
		return v, invalid("volume %q: %v", s, err)
	}
	v.Source, v.Target = src, parts[1]
	return v, nil
}

// ParseIDMap parses "CONTAINER:HOST:SIZE", the form of --uidmap/--gidmap.
func ParseIDMap(s string) (IDMap, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return IDMap{}, invalid("id map %q: want CONTAINER:HOST:SIZE", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return IDMap{}, invalid("id map %q: %q is not a number", s, p)
		}
		n[i] = int(v)
	}
	if n[2] == 0 {
		return IDMap{}, invalid("id map %q: size must be positive", s)
	}
	m := IDMap{ContainerID: n[0], HostID: n[1], Size: n[2]}
	if !m.fits() {
		return IDMap{}, invalid("id map %q: ids run past %d, the last valid id", s, maxID)
	}
	return m, nil
}

// maxID is the highest uid or gid; 4294967295 means "no id" to the kernel.
const maxID = 1<<32 - 2

// fits reports whether both ranges of m stay within valid ids: the kernel
// refuses a uid_map line that reaches past maxID.
func (m IDMap) fits() bool {
	return m.Size > 0 && m.ContainerID >= 0 && m.HostID >= 0 &&
		m.ContainerID+m.Size-1 <= maxID && m.HostID+m.Size-1 <= maxID
}

// defaultPath is the PATH a container gets when Env has none (Docker's).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// netMode says how the container gets its network namespace.
type netMode string

const (
	netNew  netMode = "new"
	netHost netMode = "host"
	netJoin netMode = "join"
)

// childConfig is what the setup child is told: the Spec resolved into
// plain decisions, so the child applies them without policy of its own.
type childConfig struct {
	Args       []string
	Env        []string
	Cwd        string
	Hostname   string
	Tty        bool
	Rootfs     rootfs.Config
	Net        netMode
	Caps       caps.Set
	Privileged bool
	Init       bool
	Sysctls    map[string]string
	// CgroupNSCloned says the clone made the cgroup namespace: the child
	// was born in its cgroup, which is then the namespace's root.
	CgroupNSCloned bool
	// ExecSocket: descriptor execSocketFD is the bound exec socket, for
	// the init to listen on.
	ExecSocket bool
}

// resolve validates s and turns it into the child's configuration.
func (s Spec) resolve() (childConfig, error) {
	c := childConfig{
		Args:       s.Args,
		Cwd:        s.Cwd,
		Hostname:   s.Hostname,
		Tty:        s.Tty,
		Privileged: s.Privileged,
		Init:       s.Init,
		Sysctls:    s.Sysctls,
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return c, invalid("no command")
	}
	if c.Cwd == "" {
		c.Cwd = "/"
	}
	if !filepath.IsAbs(c.Cwd) {
		return c, invalid("working directory %q is not absolute", s.Cwd)
	}
	if len(s.Hostname) > 64 || strings.ContainsAny(s.Hostname, "/ \t\n\x00") {
		return c, invalid("hostname %q is not valid", s.Hostname)
	}
	c.Env = defaultEnv(s.Env, s.Hostname)

	rc, err := s.rootfsConfig()
	if err != nil {
		return c, err
	}
	c.Rootfs = rc

	switch s.NetNS {
	case "":
		c.Net = netNew
	case "host":
		c.Net = netHost
	default:
		if !filepath.IsAbs(s.NetNS) {
			return c, invalid("network namespace %q: want \"\", \"host\" or an absolute path", s.NetNS)
		}
		if s.UserNS {
			// After CLONE_NEWUSER the child has no rights over a network
			// namespace owned by the caller's user namespace.
			return c, invalid("joining network namespace %s from a new user namespace is not supported", s.NetNS)
		}
		c.Net = netJoin
	}
	if s.ExecSocket != "" {
		switch {
		case !s.Init:
			return c, invalid("an exec socket needs the init")
		case !filepath.IsAbs(s.ExecSocket):
			return c, invalid("exec socket %q is not an absolute path", s.ExecSocket)
		case len(s.ExecSocket) >= len(unix.RawSockaddrUnix{}.Path):
			return c, invalid("exec socket path %s is too long for a unix socket", s.ExecSocket)
		}
		c.ExecSocket = true
	}
	if !s.UserNS && (len(s.UIDMap) > 0 || len(s.GIDMap) > 0) {
		return c, invalid("uid/gid maps need a user namespace")
	}
	for _, maps := range [][]IDMap{s.UIDMap, s.GIDMap} {
		if err := checkIDMaps(maps); err != nil {
			return c, err
		}
	}

	if c.Caps, err = caps.Resolve(s.Privileged, s.CapAdd, s.CapDrop); err != nil {
		return c, invalid("%v", err)
	}
	for k := range s.Sysctls {
		if err := checkSysctl(k, c.Net == netHost); err != nil {
			return c, err
		}
	}
	return c, nil
}

// checkIDMaps requires sane entries that map the container's root, which
// the setup child becomes.
func checkIDMaps(maps []IDMap) error {
	if len(maps) == 0 {
		return nil
	}
	root := false
	for _, m := range maps {
		if !m.fits() {
			return invalid("id map %d:%d:%d is not valid", m.ContainerID, m.HostID, m.Size)
		}
		if m.ContainerID == 0 {
			root = true
		}
	}
	if !root {
		return invalid("id maps must map id 0 of the container")
	}
	return nil
}

func (s Spec) rootfsConfig() (rootfs.Config, error) {
	rc := rootfs.Config{
		ReadOnly:    s.ReadOnlyRoot,
		Propagation: s.Propagation,
		UserNS:      s.UserNS,
		Privileged:  s.Privileged,
		Console:     s.Tty,
	}
	if s.Cwd != "" && s.Cwd != "/" {
		rc.Workdir = s.Cwd
	}
	if _, err := rootfs.ParsePropagation(s.Propagation); err != nil {
		return rc, invalid("%v", err)
	}
	cg, err := s.Cgroupfs.resolve()
	if err != nil {
		return rc, err
	}
	rc.Cgroups = cg
	if s.Rootfs != "" {
		abs, err := filepath.Abs(s.Rootfs)
		if err != nil {
			return rc, invalid("rootfs %s: %v", s.Rootfs, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return rc, invalid("rootfs %s: %v", s.Rootfs, err)
		}
		if !st.IsDir() {
			return rc, invalid("rootfs %s is not a directory", s.Rootfs)
		}
		rc.Rootfs = abs
	}
	etc := make([]string, 0, len(s.EtcFiles))
	for target := range s.EtcFiles {
		etc = append(etc, target)
	}
	// Map order is random; mount order must not be.
	slices.Sort(etc)
	for _, target := range etc {
		src := s.EtcFiles[target]
		if !strings.HasPrefix(filepath.Clean(target), "/etc/") {
			return rc, invalid("etc file %s is not under /etc", target)
		}
		st, err := os.Stat(src)
		if err != nil {
			return rc, invalid("etc file for %s: %v", target, err)
		}
		if !st.Mode().IsRegular() {
			return rc, invalid("etc file for %s: %s is not a regular file", target, src)
		}
		rc.Binds = append(rc.Binds, rootfs.Bind{Source: src, Target: filepath.Clean(target)})
	}
	for _, v := range s.Volumes {
		if !filepath.IsAbs(v.Source) || !filepath.IsAbs(v.Target) {
			return rc, invalid("volume %s:%s: both paths must be absolute", v.Source, v.Target)
		}
		if t := filepath.Clean(v.Target); t == "/" || under(t, "/proc") || under(t, "/sys") {
			return rc, invalid("volume %s: cannot be mounted on %s", v.Source, t)
		}
		if _, err := os.Stat(v.Source); err != nil {
			return rc, invalid("volume source: %v", err)
		}
		rc.Binds = append(rc.Binds, rootfs.Bind{Source: v.Source, Target: filepath.Clean(v.Target), ReadOnly: v.ReadOnly})
	}
	return rc, nil
}

// resolve validates c into the mounts to make. The controllers' names
// become the mount's options, so they are held to what the kernel's are.
func (c Cgroupfs) resolve() (rootfs.Cgroups, error) {
	if c.V2 && len(c.V1) > 0 {
		return rootfs.Cgroups{}, invalid("cgroup v2 and v1 hierarchies cannot both be mounted at /sys/fs/cgroup")
	}
	rc := rootfs.Cgroups{V2: c.V2}
	dirs := make(map[string]bool, len(c.V1))
	for _, h := range c.V1 {
		if h.Dir == "" || h.Dir == "." || h.Dir == ".." || strings.ContainsAny(h.Dir, "/\x00") {
			return rc, invalid("cgroup hierarchy directory %q is not one path element", h.Dir)
		}
		if dirs[h.Dir] {
			return rc, invalid("cgroup hierarchy directory %q given twice", h.Dir)
		}
		dirs[h.Dir] = true
		switch {
		case h.Name != "" && len(h.Controllers) > 0:
			return rc, invalid("cgroup hierarchy %s has both a name and controllers", h.Dir)
		case h.Name != "" && !controllerName(h.Name):
			return rc, invalid("cgroup hierarchy %s: %q is not a hierarchy name", h.Dir, h.Name)
		case h.Name == "" && len(h.Controllers) == 0:
			return rc, invalid("cgroup hierarchy %s has no controllers", h.Dir)
		}
		for _, ctrl := range h.Controllers {
			if !controllerName(ctrl) {
				return rc, invalid("cgroup hierarchy %s: %q is not a controller name", h.Dir, ctrl)
			}
		}
		rc.V1 = append(rc.V1, rootfs.CgroupV1{Dir: h.Dir, Controllers: slices.Clone(h.Controllers), Name: h.Name})
	}
	return rc, nil
}

// controllerName reports a name made of what the kernel's controller
// names are made of: lower-case letters, digits and underscores.
func controllerName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

func defaultEnv(env []string, hostname string) []string {
	out := append([]string{}, env...)
	has := func(key string) bool {
		for _, kv := range env {
			if strings.HasPrefix(kv, key+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, "PATH="+defaultPath)
	}
	if !has("HOME") {
		out = append(out, "HOME=/root")
	}
	if hostname != "" && !has("HOSTNAME") {
		out = append(out, "HOSTNAME="+hostname)
	}
	return out
}
