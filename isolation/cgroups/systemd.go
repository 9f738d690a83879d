package cgroups

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// DefaultSlice is the systemd driver's parent when Config.Parent is empty,
// the slice systemd-machined and podman put containers in.
const DefaultSlice = "machine.slice"

// systemdTimeout bounds one D-Bus call including the job it queues; a stop
// job waits for the scope's processes to exit.
const systemdTimeout = 2 * time.Minute

// ErrUnitNotFound is what a SystemdBus returns when systemd has no unit of
// that name loaded.
var ErrUnitNotFound = errors.New("systemd unit not found")

// SystemdBus is the part of systemd's D-Bus API the systemd driver uses.
// The job methods queue a job in mode "replace" and wait for it, returning
// its result: "done" on success, otherwise "canceled", "timeout", "failed",
// "dependency" or "skipped".
type SystemdBus interface {
	// Version is systemd's version number, 252 for "252.22-1~deb12u1".
	Version(ctx context.Context) (int, error)
	// StartTransientUnit creates and starts a unit; an existing unit of
	// the name is ErrExists.
	StartTransientUnit(ctx context.Context, name string, props []sdbus.Property) (result string, err error)
	// SetUnitProperties changes a running unit until the next reboot.
	SetUnitProperties(ctx context.Context, name string, props []sdbus.Property) error
	// StopUnit stops a unit; an unknown unit is ErrUnitNotFound.
	StopUnit(ctx context.Context, name string) (result string, err error)
}

// DefaultDriver picks the driver for a host: systemd when systemd is the
// init system of a unified cgroup v2 host, since systemd then owns the tree
// and moves processes it does not know about, and cgroupfs otherwise.
func DefaultDriver(l Layout) string {
	if l.Mode == ModeUnified && systemdIsInit("/") {
		return DriverSystemd
	}
	return DriverCgroupfs
}

// systemdIsInit tells whether systemd runs as PID 1 in the system whose
// root is root: sd_booted's /run/systemd/system, plus /proc/1/comm because
// that directory may outlive a switch to another init.
func systemdIsInit(root string) bool {
	if fi, err := os.Stat(filepath.Join(root, "run/systemd/system")); err != nil || !fi.IsDir() {
		return false
	}
	comm, err := os.ReadFile(filepath.Join(root, "proc/1/comm"))
	return err == nil && strings.TrimSpace(string(comm)) == "systemd"
}

// systemdManager runs the container in a transient scope unit
// nsnet-<ID>.scope below a slice. Create only checks; the first Apply
// starts the scope with the container's process in it, because systemd
// starts a scope only with processes. The limits go to systemd as unit
// properties, so that systemd does not reset them when it rewrites the
// cgroup, and are also written to the scope's directory by the v2 driver,
// which covers what the properties cannot express (device rules) and makes
// the values exact. Delegate=yes gives the scope's directory to nsnet.
type systemdManager struct {
	cfg   Config
	unit  string
	slice string
	// v2 writes the scope's directory; its Path is the scope's cgroup, as
	// systemd's ControlGroup property shows it.
	v2 *v2Manager
	// version is systemd's, 0 until asked.
	version int
	// startScope is set by Create and cleared once the scope started: the
	// next Apply starts it.
	startScope bool
}

func newSystemd(l Layout, c Config) (*systemdManager, error) {
	if l.Mode != ModeUnified || l.V2 == nil {
		return nil, fmt.Errorf("the systemd cgroup driver needs a unified cgroup v2 host, this one is %v: %w", l.Mode, ErrInvalid)
	}
	unit, err := scopeName(c.ID)
	if err != nil {
		return nil, err
	}
	slice := c.Parent
	if slice == "" {
		slice = DefaultSlice
	}
	slicePath, err := sliceCgroup(slice)
	if err != nil {
		return nil, err
	}
	if c.Systemd == nil {
		c.Systemd = dbusSystemd{}
	}
	// systemd's cgroup paths start at its own root, which is what the
	// cgroup2 mount shows even when the mount is a subtree of the host's.
	h := *l.V2
	h.Root = "/"
	v2, err := newV2(base{rel: path.Join(slicePath, unit), cfg: c}, h)
	if err != nil {
		return nil, err
	}
	return &systemdManager{cfg: c, unit: unit, slice: slice, v2: v2}, nil
}

// scopeName is the unit of container id. systemd allows only these
// characters in unit names, and a name of at most 255 bytes.
func scopeName(id string) (string, error) {
	if id == "" || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.-") != "" {
		return "", invalid("container id %q cannot name a systemd unit (letters, digits and :_.- only)", id)
	}
	name := "nsnet-" + id + ".scope"
	if len(name) > 255 {
		return "", invalid("container id %q is too long for a systemd unit name", id)
	}
	return name, nil
}

// sliceCgroup maps a slice name to its cgroup: slices nest by their dashes,
// so a-b.slice is /a.slice/a-b.slice, and -.slice is the root.
func sliceCgroup(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || name == "" {
		return "", invalid("cgroup parent %q is not a systemd slice: the systemd driver wants a slice name such as %s or foo-bar.slice", slice, DefaultSlice)
	}
	if name == "-" {
		return "/", nil
	}
	switch {
	case len(slice) > 255:
		return "", invalid("slice name %q is longer than 255 bytes", slice)
	case strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.-") != "":
		return "", invalid("slice %q: a slice name has letters, digits and :_.- only", slice)
	case strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") || strings.Contains(name, "--"):
		return "", invalid("slice %q: dashes separate nesting levels, so none may be empty", slice)
	}
	var dirs []string
	parts := strings.Split(name, "-")
	for i := range parts {
		dir := strings.Join(parts[:i+1], "-") + ".slice"
		if needsEscape(dir) {
			return "", invalid("slice %q: systemd would rename its directory %s in cgroupfs; choose another name", slice, dir)
		}
		dirs = append(dirs, dir)
	}
	return "/" + strings.Join(dirs, "/"), nil
}

// needsEscape reports the directory names systemd prefixes with "_" so they
// cannot clash with kernel files (cg_escape): names starting with "_" or
// ".", and names starting with a controller name and a dot. The controller
// list here is wider than systemd's, so such a name is refused rather than
// mapped to the wrong directory.
func needsEscape(dir string) bool {
	if strings.HasPrefix(dir, "_") || strings.HasPrefix(dir, ".") {
		return true
	}
	pre, _, _ := strings.Cut(dir, ".")
	return v1Controllers[pre] || pre == "io" || pre == "cgroup" || strings.HasPrefix(pre, "bpf-")
}

func (m *systemdManager) Path() string { return m.v2.Path() }

// Created is empty: systemd creates and removes the slices.
func (m *systemdManager) Created() []string { return nil }

func (m *systemdManager) ensureVersion(ctx context.Context) error {
	if m.version != 0 {
		return nil
	}
	v, err := m.cfg.Systemd.Version(ctx)
	if err != nil {
		return fmt.Errorf("asking systemd for its version: %w", err)
	}
	m.version = v
	return nil
}

// Create checks that the scope does not exist yet and that systemd
// answers, before the container's process is made.
func (m *systemdManager) Create() error {
	if exists(m.v2.leaf, "") {
		return fmt.Errorf("creating %s: %s: %w", m.unit, m.v2.leaf, ErrExists)
	}
	ctx, cancel := context.WithTimeout(context.Background(), systemdTimeout)
	defer cancel()
	if err := m.ensureVersion(ctx); err != nil {
		return err
	}
	m.startScope = true
	return nil
}

// Apply starts the scope with pid in it after Create; otherwise (a second
// process, or a Manager of a later nsnet command) it moves pid into the
// running scope. A scope that started but did not take every limit is
// left running for the caller's Destroy, like the process in it.
func (m *systemdManager) Apply(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("moving pid %d into %s: not a process id", pid, m.unit)
	}
	if !m.startScope {
		return m.v2.Apply(pid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), systemdTimeout)
	defer cancel()
	limits, err := limitProps(m.cfg.Resources, m.version)
	if err != nil {
		return err
	}
	props := append(scopeProps(m.cfg.ID, m.slice, pid, m.version), limits...)
	res, err := m.cfg.Systemd.StartTransientUnit(ctx, m.unit, props)
	if err != nil {
		return fmt.Errorf("starting systemd unit %s in %s: %w", m.unit, m.slice, err)
	}
	if res != "done" {
		return fmt.Errorf("starting systemd unit %s in %s: job %s (see journalctl -u %s)", m.unit, m.slice, res, m.unit)
	}
	m.startScope = false
	if err := m.v2.set(m.cfg.Resources); err != nil {
		return fmt.Errorf("writing limits to the cgroup of %s: %w", m.unit, err)
	}
	return nil
}

func (m *systemdManager) Set(r Resources) error {
	if err := r.Validate(m.cfg.Host); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), systemdTimeout)
	defer cancel()
	if err := m.ensureVersion(ctx); err != nil {
		return err
	}
	props, err := limitProps(r, m.version)
	if err != nil {
		return err
	}
	if len(props) > 0 {
		if err := m.cfg.Systemd.SetUnitProperties(ctx, m.unit, props); err != nil {
			return fmt.Errorf("setting limits of systemd unit %s: %w", m.unit, err)
		}
	}
	if err := m.v2.set(r); err != nil {
		return fmt.Errorf("writing limits to the cgroup of %s: %w", m.unit, err)
	}
	return nil
}

func (m *systemdManager) Stats() (Stats, error) { return m.v2.Stats() }

func (m *systemdManager) OOMKills() (uint64, error) { return m.v2.OOMKills() }
func (m *systemdManager) Freeze() error             { return m.v2.Freeze() }
func (m *systemdManager) Thaw() error               { return m.v2.Thaw() }

// Destroy stops the scope; a scope whose processes have all exited is
// already gone, collected by systemd. The directory must be gone
// afterwards: systemd removes it when the unit stops, and an empty one left
// behind is removed here.
func (m *systemdManager) Destroy() error {
	ctx, cancel := context.WithTimeout(context.Background(), systemdTimeout)
	defer cancel()
	res, err := m.cfg.Systemd.StopUnit(ctx, m.unit)
	switch {
	case errors.Is(err, ErrUnitNotFound):
	case err != nil:
		return fmt.Errorf("stopping systemd unit %s: %w", m.unit, err)
	case res != "done":
		return fmt.Errorf("stopping systemd unit %s: job %s (see journalctl -u %s)", m.unit, res, m.unit)
	}
	if err := m.cfg.Dirs.Rmdir(m.v2.leaf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("systemd left %s behind after stopping %s: %w", m.v2.leaf, m.unit, err)
	}
	return nil
}
