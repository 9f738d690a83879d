// Package container keeps nsnet's containers: their ids and names, the state
// recorded for each under a root directory (/run/nsnet by default), the
// per-container /etc files, and the lifecycle (run in the foreground or
// under a detached monitor, exec, kill, remove) on top of package
// isolation.
package container

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/isolation"
	"github.com/nsnet/nsnet/isolation/cgroups"
	"github.com/nsnet/nsnet/pkg/cninet"
)

// Config is what the user asked for; it is recorded with the state so exec
// can give its commands the same environment and capabilities.
type Config struct {
	Args        []string           `json:"args"`
	Env         []string           `json:"env,omitempty"`
	Cwd         string             `json:"cwd,omitempty"`
	Tty         bool               `json:"tty,omitempty"`
	Hostname    string             `json:"hostname"`
	Rootfs      string             `json:"rootfs,omitempty"`
	ReadOnly    bool               `json:"readOnly,omitempty"`
	Volumes     []isolation.Volume `json:"volumes,omitempty"`
	Propagation string             `json:"propagation,omitempty"`
	Net         string             `json:"net"`
	UserNS      bool               `json:"userns,omitempty"`
	UIDMap      []isolation.IDMap  `json:"uidMap,omitempty"`
	GIDMap      []isolation.IDMap  `json:"gidMap,omitempty"`
	Privileged  bool               `json:"privileged,omitempty"`
	CapAdd      []string           `json:"capAdd,omitempty"`
	CapDrop     []string           `json:"capDrop,omitempty"`
	Init        bool               `json:"init"`
	Sysctls     map[string]string  `json:"sysctls,omitempty"`
	AddHosts    []HostEntry        `json:"addHosts,omitempty"`
	AutoRemove  bool               `json:"autoRemove,omitempty"`
	// CNI, Publish, IPs and MAC concern a Net that names a CNI network;
	// DNS and DNSSearch override the container's resolv.conf.
	CNI       *CNI                 `json:"cni,omitempty"`
	Publish   []cninet.PortMapping `json:"publish,omitempty"`
	IPs       []string             `json:"ips,omitempty"`
	MAC       string               `json:"mac,omitempty"`
	DNS       []string             `json:"dns,omitempty"`
	DNSSearch []string             `json:"dnsSearch,omitempty"`
	// Resources are the cgroup limits, kept up to date by Update;
	// CgroupParent places the cgroup (see cgroups.Config.Parent).
	Resources    cgroups.Resources `json:"resources"`
	CgroupParent string            `json:"cgroupParent,omitempty"`
	// DeviceRules allow devices beyond cgroups.DefaultDevices, the
	// allow-list of every unprivileged container.
	DeviceRules []cgroups.DeviceRule `json:"deviceRules,omitempty"`
	// CgroupManager is cgroups.DriverCgroupfs or DriverSystemd; empty
	// picks what the host suggests.
	CgroupManager string `json:"cgroupManager,omitempty"`
}

// HostEntry is one --add-host line of /etc/hosts.
type HostEntry struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
}

// Status is where a container is in its lifecycle.
type Status string

const (
	// Created: the state directory exists, the container is being set up.
	Created Status = "created"
	// Running: its PID 1 is alive.
	Running Status = "running"
	// Stopped: it exited (ExitCode says how) or its nsnet was killed.
	Stopped Status = "stopped"
)

// State is what is recorded of a container, in <root>/<id>/state.json.
type State struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Status  Status    `json:"status"`
	Created time.Time `json:"created"`
	// Pid is the host PID of the container's PID 1 and PidStart its start
	// time (field 22 of /proc/PID/stat), which tells it from a process
	// that got the same PID after it exited.
	Pid      int    `json:"pid,omitempty"`
	PidStart uint64 `json:"pidStart,omitempty"`
	// Monitor is the nsnet process that started the container and waits
	// for it: `nsnet run` itself or, with -d, its monitor.
	Monitor      int        `json:"monitor,omitempty"`
	MonitorStart uint64     `json:"monitorStart,omitempty"`
	ExitCode     *int       `json:"exitCode,omitempty"`
	Finished     *time.Time `json:"finished,omitempty"`
	// Dir is the state directory; it holds the /etc files and, for a
	// detached container, the log of its output.
	Dir    string `json:"dir"`
	Config Config `json:"config"`
	// Network is the container's CNI attachment while it has one.
	Network *Network `json:"network,omitempty"`
	// Cgroup is the container's cgroup while it has one.
	Cgroup *Cgroup `json:"cgroup,omitempty"`
	// Paused: its processes are frozen.
	Paused bool `json:"paused,omitempty"`
	// OOMKilled: the kernel's OOM killer killed a process of the
	// container because of its memory limit.
	OOMKilled bool `json:"oomKilled,omitempty"`
	// Warnings say what the container runs without that it would
	// normally have (a cgroup hierarchy nsnet could not write).
	Warnings []string `json:"warnings,omitempty"`

	// cgm is the driver of Cgroup, kept while the process that planned it
	// goes on to start the container.
	cgm cgroups.Manager
	// cni is the loaded CNI network of a container this process attached,
	// which its detach reuses.
	cni *cninet.Network
}

// Running reports whether the container's PID 1 is still the process
// recorded.
func (s *State) Running() bool {
	return s.Status == Running && alive(s.Pid, s.PidStart)
}

// monitorAlive reports whether the process that waits for the container
// still runs.
func (s *State) monitorAlive() bool {
	return alive(s.Monitor, s.MonitorStart)
}

// refresh corrects the recorded status with what the kernel says: a
// container whose PID 1 and monitor are gone, or whose monitor died while
// creating it, has stopped, even if no one could record it. While the
// monitor lives it is about to record the exit code itself, so the
// container is not reported stopped without one. It reports whether it
// changed the status.
func (s *State) refresh() bool {
	switch s.Status {
	case Running:
		if !alive(s.Pid, s.PidStart) && !s.monitorAlive() {
			s.Status = Stopped
			return true
		}
	case Created:
		if !s.monitorAlive() {
			s.Status = Stopped
			return true
		}
	}
	return false
}

// validName says whether s may be an id or a name: 1-64 letters, digits,
// '_', '.' or '-', the first a letter or digit. Both become directory
// names, so neither may hold a slash or start with a dot. A loop rather
// than a regexp: compiling one at package init would cost every nsnet
// process, the container's setup child and init included, on its way up.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// NewID returns a random id of 12 hex digits. The bytes come from
// getrandom(2) directly: crypto/rand's first use in a process costs a
// third of a millisecond of every nsnet run, for an id that needs no more
// than the kernel's pool.
func NewID() (string, error) {
	var b [6]byte
	if _, err := unix.Getrandom(b[:], 0); err != nil {
		return "", fmt.Errorf("generating an id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// CheckID reports whether id can name a container's state directory.
func CheckID(id string) error {
	if !validName(id) || filepath.Base(id) != id {
		return fmt.Errorf("bad container id %q: want 1-64 letters, digits, '_', '.' or '-', not starting with a symbol", id)
	}
	return nil
}

// CheckName reports whether name is a valid container name.
func CheckName(name string) error {
	if !validName(name) {
		return fmt.Errorf("bad container name %q: want 1-64 letters, digits, '_', '.' or '-', not starting with a symbol", name)
	}
	return nil
}

// netNS turns --net into isolation's NetNS; cni says that mode names a
// CNI network, which the container joins in a new netns.
func netNS(mode string) (ns string, cni bool, err error) {
	switch {
	case mode == "" || mode == "none":
		return "", false, nil
	case mode == "host":
		return "host", false, nil
	case strings.HasPrefix(mode, "ns:"):
		p := strings.TrimPrefix(mode, "ns:")
		if !filepath.IsAbs(p) {
			return "", false, fmt.Errorf("--net %s: the namespace path must be absolute", mode)
		}
		return p, false, nil
	case validName(mode):
		return "", true, nil
	}
	return "", false, fmt.Errorf("--net %q: want none, host, ns:/path or the name of a CNI network", mode)
}

// spec is the isolation Spec of a container whose /etc files are in dir.
func (c Config) spec(etcFiles map[string]string) (isolation.Spec, error) {
	net, _, err := netNS(c.Net)
	if err != nil {
		return isolation.Spec{}, err
	}
	return isolation.Spec{
		Args:         c.Args,
		Env:          c.Env,
		Cwd:          c.Cwd,
		Tty:          c.Tty,
		Hostname:     c.Hostname,
		Rootfs:       c.Rootfs,
		ReadOnlyRoot: c.ReadOnly,
		Volumes:      c.Volumes,
		EtcFiles:     etcFiles,
		Propagation:  c.Propagation,
		NetNS:        net,
		UserNS:       c.UserNS,
		UIDMap:       c.UIDMap,
		GIDMap:       c.GIDMap,
		Privileged:   c.Privileged,
		CapAdd:       c.CapAdd,
		CapDrop:      c.CapDrop,
		Init:         c.Init,
		Sysctls:      c.Sysctls,
	}, nil
}

// resources are the limits the container's cgroup gets: Resources plus,
// unless privileged (which leaves devices alone), the device allow-list.
func (c Config) resources() cgroups.Resources {
	r := c.Resources
	if !c.Privileged {
		r.Devices = append(cgroups.DefaultDevices(), c.DeviceRules...)
	}
	return r
}
