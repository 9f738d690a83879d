package cgroups

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// systemdHost returns the layout of a host the systemd driver runs on for
// real (root, systemd as PID 1, unified cgroup v2), skipping otherwise.
func systemdHost(t *testing.T) Layout {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to start system scope units")
	}
	l, err := DetectHost()
	if err != nil {
		t.Skipf("no usable cgroups: %v", err)
	}
	if got := DefaultDriver(l); got != DriverSystemd {
		t.Skipf("needs systemd as PID 1 on a unified cgroup v2 host (this one is %v, default driver %s)", l.Mode, got)
	}
	return l
}

// unitProps reads a unit's properties straight from systemd, past the
// driver.
func unitProps(t *testing.T, unit string) (map[string]any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := sdbus.NewWithContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.GetAllPropertiesContext(ctx, unit)
}

// startSleep runs a process to put in a scope; it is killed and reaped at
// the end of the test. The returned channel is closed when it has exited.
func startSleep(t *testing.T) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	sleep := exec.Command("sleep", "120")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = sleep.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = sleep.Process.Kill()
		<-done
	})
	return sleep, done
}

func TestSystemdScopeKernel(t *testing.T) {
	l := systemdHost(t)
	host, err := CurrentHost()
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("systemdtest-%d", os.Getpid())
	unit := "nsnet-" + id + ".scope"
	m, err := New(l, Config{ID: id, Driver: DriverSystemd, Host: host, Resources: Resources{Memory: 64 << 20, PidsLimit: 30}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "/" + DefaultSlice + "/" + unit; m.Path() != want {
		t.Errorf("Path = %q, want %q", m.Path(), want)
	}
	dir := filepath.Join(l.V2.Mountpoint, m.Path())

	sleep, exited := startSleep(t)
	// Stops the scope when the test failed before Destroy; a unit that is
	// gone by then is fine.
	t.Cleanup(func() { _ = m.Destroy() })

	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sleep.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := "0::" + m.Path(); strings.TrimSpace(string(cg)) != want {
		t.Errorf("sleep's cgroup %q, want %q", strings.TrimSpace(string(cg)), want)
	}
	p, err := unitProps(t, unit)
	if err != nil {
		t.Fatal(err)
	}
	if p["ActiveState"] != "active" || p["MemoryMax"] != uint64(64<<20) || p["TasksMax"] != uint64(30) || p["Delegate"] != true {
		t.Errorf("unit %s: ActiveState %v MemoryMax %v TasksMax %v Delegate %v", unit, p["ActiveState"], p["MemoryMax"], p["TasksMax"], p["Delegate"])
	}
	for f, want := range map[string]string{"memory.max": "67108864", "pids.max": "30"} {
		if got := readT(t, filepath.Join(dir, f)); strings.TrimSpace(got) != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}

	if err := m.Set(Resources{Memory: 96 << 20, PidsLimit: Unlimited}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"memory.max": "100663296", "pids.max": "max"} {
		if got := readT(t, filepath.Join(dir, f)); strings.TrimSpace(got) != want {
			t.Errorf("after Set %s = %q, want %q", f, got, want)
		}
	}
	if p, err := unitProps(t, unit); err != nil || p["MemoryMax"] != uint64(96<<20) {
		t.Errorf("after Set the unit's MemoryMax is %v (%v)", p["MemoryMax"], err)
	}
	// The sleep's memory stays charged where it was allocated, so only
	// the task count is certain.
	if s, err := m.Stats(); err != nil || s.Pids != 1 {
		t.Errorf("Stats = %+v, %v; want the one sleep", s, err)
	}

	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(dir, "cgroup.events")); !strings.Contains(got, "frozen 1") {
		t.Errorf("cgroup.events after Freeze: %q", got)
	}
	if got := readT(t, filepath.Join(dir, "cgroup.freeze")); strings.TrimSpace(got) != "1" {
		t.Errorf("cgroup.freeze = %q", got)
	}
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}

	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Error("sleep still runs after its scope was stopped")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scope directory left: %v", err)
	}
	// systemd unloads the stopped scope, or shows it inactive.
	if p, err := unitProps(t, unit); err == nil && p["ActiveState"] == "active" {
		t.Errorf("unit still active after Destroy")
	}
}

// A second container with the same id must not take over a running scope.
func TestSystemdScopeExistsKernel(t *testing.T) {
	l := systemdHost(t)
	host, err := CurrentHost()
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("systemdtest2-%d", os.Getpid())
	c := Config{ID: id, Driver: DriverSystemd, Host: host}
	m, err := New(l, c)
	if err != nil {
		t.Fatal(err)
	}
	sleep, _ := startSleep(t)
	t.Cleanup(func() { _ = m.Destroy() })
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	m2, err := New(l, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Create(); !errors.Is(err, ErrExists) {
		t.Errorf("second Create = %v, want ErrExists", err)
	}
}
