package cgroups

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

type busCall struct {
	method, unit string
	props        []string
}

// fakeBus plays systemd: starting the unit makes the scope's directory in
// the fake tree, stopping it removes it (unless keepOnStop).
type fakeBus struct {
	version     int
	startResult string
	startErr    error
	stopResult  string
	stopErr     error
	keepOnStop  bool
	// scope is the directory systemd makes for the unit.
	scope string
	calls []busCall
}

func (f *fakeBus) record(method, unit string, props []sdbus.Property) {
	f.calls = append(f.calls, busCall{method, unit, renderProps(props)})
}

func (f *fakeBus) Version(context.Context) (int, error) {
	f.record("Version", "", nil)
	return f.version, nil
}

func (f *fakeBus) StartTransientUnit(_ context.Context, name string, props []sdbus.Property) (string, error) {
	f.record("Start", name, props)
	if f.startErr != nil {
		return "", f.startErr
	}
	if err := os.MkdirAll(f.scope, 0o755); err != nil {
		return "", err
	}
	if err := populate(f.scope, v2Files); err != nil {
		return "", err
	}
	return orDefault(f.startResult, "done"), nil
}

func (f *fakeBus) SetUnitProperties(_ context.Context, name string, props []sdbus.Property) error {
	f.record("Set", name, props)
	return nil
}

func (f *fakeBus) StopUnit(_ context.Context, name string) (string, error) {
	f.record("Stop", name, nil)
	if f.stopErr != nil {
		return "", f.stopErr
	}
	if !f.keepOnStop {
		if err := os.RemoveAll(f.scope); err != nil {
			return "", err
		}
	}
	return orDefault(f.stopResult, "done"), nil
}

func (f *fakeBus) methods() string {
	var m []string
	for _, c := range f.calls {
		m = append(m, c.method)
	}
	return strings.Join(m, " ")
}

// renderProps shows each property with its D-Bus signature, the part
// systemd checks first.
func renderProps(props []sdbus.Property) []string {
	var out []string
	for _, p := range props {
		out = append(out, fmt.Sprintf("%s %s %v", p.Name, p.Value.Signature(), p.Value.Value()))
	}
	return out
}

func TestSystemdLimitProps(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Resources
		want []string
	}{
		{"none", Resources{}, nil},
		{"memory", Resources{Memory: 32 << 20}, []string{"MemoryMax t 33554432"}},
		{"memory and swap", Resources{Memory: 32 << 20, MemorySwap: 96 << 20}, []string{"MemoryMax t 33554432", "MemorySwapMax t 67108864"}},
		{"no swap", Resources{Memory: 32 << 20, MemorySwap: 32 << 20}, []string{"MemoryMax t 33554432", "MemorySwapMax t 0"}},
		{"unlimited memory and swap", Resources{Memory: Unlimited, MemorySwap: Unlimited},
			[]string{"MemoryMax t 18446744073709551615", "MemorySwapMax t 18446744073709551615"}},
		{"cpus", Resources{CPUs: 1.5}, []string{"CPUQuotaPerSecUSec t 1500000", "CPUQuotaPeriodUSec t 100000"}},
		{"small cpus", Resources{CPUs: 0.01}, []string{"CPUQuotaPerSecUSec t 10000", "CPUQuotaPeriodUSec t 100000"}},
		{"unlimited cpus", Resources{CPUs: Unlimited}, []string{"CPUQuotaPerSecUSec t 18446744073709551615", "CPUQuotaPeriodUSec t 100000"}},
		{"shares", Resources{CPUShares: 1024}, []string{"CPUWeight t 100"}},
		{"min shares", Resources{CPUShares: 2}, []string{"CPUWeight t 1"}},
		{"cpuset", Resources{CpusetCpus: "0-1", CpusetMems: "0"}, []string{"AllowedCPUs ay [3]", "AllowedMemoryNodes ay [1]"}},
		{"pids", Resources{PidsLimit: 20}, []string{"TasksMax t 20"}},
		{"unlimited pids", Resources{PidsLimit: Unlimited}, []string{"TasksMax t 18446744073709551615"}},
		{"blkio weight", Resources{BlkioWeight: 1000}, []string{"IOWeight t 10000"}},
		{"min blkio weight", Resources{BlkioWeight: 10}, []string{"IOWeight t 1"}},
		{"read bps", Resources{DeviceReadBps: []DeviceRate{{8, 0, 1 << 20}, {259, 1, 5}}},
			[]string{"IOReadBandwidthMax a(st) [{/dev/block/8:0 1048576} {/dev/block/259:1 5}]"}},
		{"write bps", Resources{DeviceWriteBps: []DeviceRate{{8, 16, 2 << 20}}},
			[]string{"IOWriteBandwidthMax a(st) [{/dev/block/8:16 2097152}]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.r.Validate(testHost()); err != nil {
				t.Fatalf("test limits invalid: %v", err)
			}
			p, err := limitProps(tc.r, 252)
			if err != nil {
				t.Fatal(err)
			}
			if got := renderProps(p); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("limitProps =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestSystemdOldVersions(t *testing.T) {
	r := Resources{CPUs: 1, CpusetCpus: "1", CpusetMems: "0"}
	for _, tc := range []struct {
		version int
		want    []string
	}{
		{0, []string{"CPUQuotaPerSecUSec t 1000000", "CPUQuotaPeriodUSec t 100000", "AllowedCPUs ay [2]", "AllowedMemoryNodes ay [1]"}},
		{244, []string{"CPUQuotaPerSecUSec t 1000000", "CPUQuotaPeriodUSec t 100000", "AllowedCPUs ay [2]", "AllowedMemoryNodes ay [1]"}},
		{243, []string{"CPUQuotaPerSecUSec t 1000000", "CPUQuotaPeriodUSec t 100000"}},
		{241, []string{"CPUQuotaPerSecUSec t 1000000"}},
	} {
		p, err := limitProps(r, tc.version)
		if err != nil {
			t.Fatal(err)
		}
		if got := renderProps(p); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("systemd %d: %q, want %q", tc.version, got, tc.want)
		}
	}
	for v, collect := range map[int]bool{235: false, 236: true} {
		got := strings.Join(renderProps(scopeProps("c1", "machine.slice", 1, v)), "|")
		if strings.Contains(got, "CollectMode") != collect {
			t.Errorf("systemd %d: scope properties %s", v, got)
		}
	}
}

func TestSystemdScopeProps(t *testing.T) {
	got := renderProps(scopeProps("c1", "foo-bar.slice", 4242, 252))
	want := []string{
		"Description s nsnet container c1",
		"Slice s foo-bar.slice",
		"PIDs au [4242]",
		"Delegate b true",
		"DefaultDependencies b false",
		"CollectMode s inactive-or-failed",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("scopeProps =\n%q\nwant\n%q", got, want)
	}
}

func TestListMask(t *testing.T) {
	for list, want := range map[string][]byte{
		"0":       {0x01},
		"0-2,4":   {0x17},
		"7":       {0x80},
		"8":       {0x00, 0x01},
		"1,9-10":  {0x02, 0x06},
		"0-15,17": {0xff, 0xff, 0x02},
	} {
		got, err := listMask(list)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("listMask(%q) = %x, %v; want %x", list, got, err, want)
		}
	}
	if _, err := listMask("2-1"); err == nil {
		t.Error("listMask accepted a reversed range")
	}
}

// The properties must survive D-Bus marshalling in the a(sv) array that
// StartTransientUnit sends.
func TestSystemdPropsEncode(t *testing.T) {
	r := Resources{Memory: 64 << 20, CpusetCpus: "1", PidsLimit: 5, DeviceWriteBps: []DeviceRate{{8, 0, 7}}}
	limits, err := limitProps(r, 252)
	if err != nil {
		t.Fatal(err)
	}
	props := append(scopeProps("c1", DefaultSlice, 42, 252), limits...)
	msg := &dbus.Message{
		Type: dbus.TypeMethodCall,
		Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:      dbus.MakeVariant(dbus.ObjectPath("/org/freedesktop/systemd1")),
			dbus.FieldMember:    dbus.MakeVariant("StartTransientUnit"),
			dbus.FieldInterface: dbus.MakeVariant("org.freedesktop.systemd1.Manager"),
			dbus.FieldSignature: dbus.MakeVariant(dbus.SignatureOf("", "", props, []sdbus.PropertyCollection{})),
		},
		Body: []any{"nsnet-c1.scope", "replace", props, []sdbus.PropertyCollection{}},
	}
	if sig := msg.Headers[dbus.FieldSignature].Value().(dbus.Signature).String(); sig != "ssa(sv)a(sa(sv))" {
		t.Fatalf("StartTransientUnit signature %s", sig)
	}
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	back, err := dbus.DecodeMessage(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var got []sdbus.Property
	var name, mode string
	var aux []sdbus.PropertyCollection
	if err := dbus.Store(back.Body, &name, &mode, &got, &aux); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(props) {
		t.Fatalf("decoded %d properties, sent %d", len(got), len(props))
	}
	for i, p := range got {
		want := props[i].Value.Value()
		if p.Name == "IOWriteBandwidthMax" {
			// godbus decodes a struct as the list of its fields.
			want = [][]any{{"/dev/block/8:0", uint64(7)}}
		}
		if p.Name != props[i].Name || p.Value.Signature() != props[i].Value.Signature() || !reflect.DeepEqual(p.Value.Value(), want) {
			t.Errorf("property %d decoded as %s %s %#v, sent %s %s %#v", i, p.Name, p.Value.Signature(), p.Value.Value(),
				props[i].Name, props[i].Value.Signature(), want)
		}
	}
}

func TestSliceCgroup(t *testing.T) {
	for slice, want := range map[string]string{
		"machine.slice":      "/machine.slice",
		"foo-bar.slice":      "/foo.slice/foo-bar.slice",
		"a-b-c.slice":        "/a.slice/a-b.slice/a-b-c.slice",
		"-.slice":            "/",
		"user.x_y:z.slice":   "/user.x_y:z.slice",
		"cpuhog-low.slice":   "/cpuhog.slice/cpuhog-low.slice",
		"system-nsnet.slice": "/system.slice/system-nsnet.slice",
	} {
		got, err := sliceCgroup(slice)
		if err != nil || got != want {
			t.Errorf("sliceCgroup(%q) = %q, %v; want %q", slice, got, err, want)
		}
	}
	for slice, msg := range map[string]string{
		"nsnet":                             "not a systemd slice",
		"/x":                                "not a systemd slice",
		"machine.scope":                     "not a systemd slice",
		".slice":                            "not a systemd slice",
		"a/b.slice":                         "letters, digits",
		"a b.slice":                         "letters, digits",
		"-foo.slice":                        "none may be empty",
		"foo-.slice":                        "none may be empty",
		"a--b.slice":                        "none may be empty",
		"_x.slice":                          "would rename",
		"cpu-heavy.slice":                   "would rename its directory cpu.slice",
		"memory.x.slice":                    "would rename",
		"cgroup.slice":                      "would rename",
		strings.Repeat("a", 250) + ".slice": "longer than 255",
	} {
		_, err := sliceCgroup(slice)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), msg) {
			t.Errorf("sliceCgroup(%q) = %v, want an ErrInvalid saying %q", slice, err, msg)
		}
	}
}

func TestScopeName(t *testing.T) {
	if got, err := scopeName("web-1_a:b.c"); err != nil || got != "nsnet-web-1_a:b.c.scope" {
		t.Errorf("scopeName = %q, %v", got, err)
	}
	for _, id := range []string{"", "a/b", "a b", `a\x2d`, "ä", strings.Repeat("x", 244)} {
		if _, err := scopeName(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("scopeName(%q) = %v, want ErrInvalid", id, err)
		}
	}
}

func TestSystemdNewErrors(t *testing.T) {
	l, prefix, _ := fakeV2(t, allControllers)
	hybrid := mustDetect(t, hybridMountinfo, hybridSelf)
	for _, tc := range []struct {
		name string
		l    Layout
		c    Config
		msg  string
	}{
		{"v1 host", hybrid, Config{ID: "c1", Driver: DriverSystemd}, "needs a unified cgroup v2 host, this one is hybrid"},
		{"cgroupfs parent", l, Config{ID: "c1", Driver: DriverSystemd, Parent: "nsnet"}, `cgroup parent "nsnet" is not a systemd slice`},
		{"absolute parent", l, Config{ID: "c1", Driver: DriverSystemd, Parent: "/x"}, "is not a systemd slice"},
		{"bad id", l, Config{ID: "a b", Driver: DriverSystemd}, "cannot name a systemd unit"},
		{"bad limit", l, Config{ID: "c1", Driver: DriverSystemd, Resources: Resources{PidsLimit: -5}}, "pids-limit"},
		{"unknown driver", l, Config{ID: "c1", Driver: "docker"}, `cgroup driver "docker"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Host, tc.c.Prefix, tc.c.Systemd = testHost(), prefix, &fakeBus{}
			_, err := New(tc.l, tc.c)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("New = %v, want an ErrInvalid saying %q", err, tc.msg)
			}
		})
	}
}

// newSystemdTest returns a systemd-driver Manager on a fake v2 tree and
// the directory of its scope.
func newSystemdTest(t *testing.T, parent string, r Resources) (Manager, *fakeBus, Config, string) {
	t.Helper()
	l, prefix, _ := fakeV2(t, allControllers)
	bus := &fakeBus{version: 252}
	c := Config{ID: "c1", Driver: DriverSystemd, Parent: parent, Resources: r, Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v2Files}, Systemd: bus}
	m, err := New(l, c)
	if err != nil {
		t.Fatal(err)
	}
	bus.scope = filepath.Join(prefix, "/sys/fs/cgroup", m.Path())
	return m, bus, c, bus.scope
}

func TestSystemdLifecycle(t *testing.T) {
	r := Resources{Memory: 32 << 20, MemorySwap: 64 << 20, CPUs: 0.5, CpusetCpus: "1", PidsLimit: 20, BlkioWeight: 500,
		DeviceReadBps: []DeviceRate{{8, 0, 1 << 20}}}
	m, bus, c, scope := newSystemdTest(t, "foo-bar.slice", r)
	if got := m.Path(); got != "/foo.slice/foo-bar.slice/nsnet-c1.scope" {
		t.Errorf("Path = %q", got)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(scope); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Create made the scope directory: %v", err)
	}
	if err := m.Apply(4242); err != nil {
		t.Fatal(err)
	}
	if got := bus.methods(); got != "Version Start" {
		t.Fatalf("calls %q", got)
	}
	start := bus.calls[1]
	want := []string{
		"Description s nsnet container c1",
		"Slice s foo-bar.slice",
		"PIDs au [4242]",
		"Delegate b true",
		"DefaultDependencies b false",
		"CollectMode s inactive-or-failed",
		"MemoryMax t 33554432",
		"MemorySwapMax t 33554432",
		"CPUQuotaPerSecUSec t 500000",
		"CPUQuotaPeriodUSec t 100000",
		"AllowedCPUs ay [2]",
		"TasksMax t 20",
		"IOWeight t 4950",
		"IOReadBandwidthMax a(st) [{/dev/block/8:0 1048576}]",
	}
	if start.unit != "nsnet-c1.scope" || !reflect.DeepEqual(start.props, want) {
		t.Errorf("started %s with\n%q\nwant\n%q", start.unit, start.props, want)
	}
	// The same limits, written by the v2 driver next to systemd.
	for f, want := range map[string]string{
		"memory.max": "33554432", "memory.swap.max": "33554432", "cpu.max": "50000 100000", "cpuset.cpus": "1",
		"pids.max": "20", "io.weight": "default 4950", "io.max": "8:0 rbps=1048576 wbps=max",
		// systemd put the process in through PIDs.
		"cgroup.procs": "",
	} {
		if got := readT(t, filepath.Join(scope, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}

	if err := m.Apply(4343); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(scope, "cgroup.procs")); got != "4343" {
		t.Errorf("a second Apply wrote cgroup.procs %q", got)
	}
	if got := bus.methods(); got != "Version Start" {
		t.Errorf("a second Apply called systemd: %q", got)
	}

	if err := m.Set(Resources{Memory: Unlimited, PidsLimit: 50}); err != nil {
		t.Fatal(err)
	}
	set := bus.calls[len(bus.calls)-1]
	if want := []string{"MemoryMax t 18446744073709551615", "TasksMax t 50"}; set.method != "Set" || set.unit != "nsnet-c1.scope" || !reflect.DeepEqual(set.props, want) {
		t.Errorf("Set called %s %s %q", set.method, set.unit, set.props)
	}
	for f, want := range map[string]string{"memory.max": "max", "pids.max": "50"} {
		if got := readT(t, filepath.Join(scope, f)); got != want {
			t.Errorf("after Set %s = %q, want %q", f, got, want)
		}
	}
	if err := m.Set(Resources{PidsLimit: -7}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Set accepted a bad limit: %v", err)
	}

	writeT(t, filepath.Join(scope, "pids.current"), "2\n")
	writeT(t, filepath.Join(scope, "cpu.stat"), "usage_usec 9\nnr_periods 1\nnr_throttled 1\nthrottled_usec 4\n")
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Pids != 2 || s.CPUUsage != 9000 || s.ThrottledTime != 4000 {
		t.Errorf("Stats = %+v", s)
	}
	writeT(t, filepath.Join(scope, "cgroup.events"), "populated 1\nfrozen 1\n")
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(scope, "cgroup.freeze")); got != "1" {
		t.Errorf("cgroup.freeze = %q", got)
	}
	writeT(t, filepath.Join(scope, "cgroup.events"), "populated 1\nfrozen 0\n")
	if err := m.Thaw(); err != nil {
		t.Fatal(err)
	}

	// nsnet rm runs in another process: a new Manager stops the scope.
	c.Systemd = bus
	m2, err := New(mustDetect(t, unifiedMountinfo, unifiedSelf), c)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Created() != nil {
		t.Errorf("Created = %q", m2.Created())
	}
	if err := m2.Destroy(); err != nil {
		t.Fatal(err)
	}
	if stop := bus.calls[len(bus.calls)-1]; stop.method != "Stop" || stop.unit != "nsnet-c1.scope" {
		t.Errorf("Destroy called %s %s", stop.method, stop.unit)
	}
	if _, err := os.Stat(scope); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scope directory left: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(scope)); err != nil {
		t.Errorf("the slice is systemd's and must stay: %v", err)
	}
}

func TestSystemdDefaultSlice(t *testing.T) {
	m, bus, _, _ := newSystemdTest(t, "", Resources{})
	if got := m.Path(); got != "/machine.slice/nsnet-c1.scope" {
		t.Errorf("Path = %q", got)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(7); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(bus.calls[1].props, "|"); !strings.Contains(got, "Slice s machine.slice|") {
		t.Errorf("start properties %s", got)
	}
}

func TestSystemdCreateExists(t *testing.T) {
	m, bus, _, scope := newSystemdTest(t, "", Resources{})
	if err := os.MkdirAll(scope, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); !errors.Is(err, ErrExists) {
		t.Errorf("Create = %v, want ErrExists", err)
	}
	if len(bus.calls) != 0 {
		t.Errorf("calls %q", bus.methods())
	}
}

func TestSystemdStartFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result string
		err    error
		is     error
		msg    string
	}{
		{"job failed", "failed", nil, nil, "starting systemd unit nsnet-c1.scope in machine.slice: job failed"},
		{"job canceled", "canceled", nil, nil, "job canceled"},
		{"unit exists", "", fmt.Errorf("%w: Unit nsnet-c1.scope already exists", ErrExists), ErrExists, "already exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, bus, _, _ := newSystemdTest(t, "", Resources{Memory: 64 << 20})
			bus.startResult, bus.startErr = tc.result, tc.err
			if err := m.Create(); err != nil {
				t.Fatal(err)
			}
			err := m.Apply(7)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("Apply = %v, want %q", err, tc.msg)
			}
		})
	}
}

func TestSystemdDestroy(t *testing.T) {
	t.Run("unit already gone", func(t *testing.T) {
		m, bus, _, _ := newSystemdTest(t, "", Resources{})
		bus.stopErr = fmt.Errorf("%w: Unit nsnet-c1.scope not loaded", ErrUnitNotFound)
		if err := m.Destroy(); err != nil {
			t.Errorf("Destroy = %v", err)
		}
	})
	t.Run("empty directory left", func(t *testing.T) {
		m, bus, _, scope := newSystemdTest(t, "", Resources{})
		if err := os.MkdirAll(scope, 0o755); err != nil {
			t.Fatal(err)
		}
		bus.keepOnStop = true
		if err := m.Destroy(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(scope); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("scope directory left: %v", err)
		}
	})
	t.Run("busy directory left", func(t *testing.T) {
		m, bus, _, scope := newSystemdTest(t, "", Resources{})
		if err := os.MkdirAll(filepath.Join(scope, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		bus.keepOnStop = true
		if err := m.Destroy(); err == nil || !strings.Contains(err.Error(), "systemd left") {
			t.Errorf("Destroy = %v", err)
		}
	})
	t.Run("stop job fails", func(t *testing.T) {
		m, bus, _, _ := newSystemdTest(t, "", Resources{})
		bus.stopResult = "timeout"
		if err := m.Destroy(); err == nil || !strings.Contains(err.Error(), "stopping systemd unit nsnet-c1.scope: job timeout") {
			t.Errorf("Destroy = %v", err)
		}
	})
	t.Run("D-Bus error", func(t *testing.T) {
		m, bus, _, _ := newSystemdTest(t, "", Resources{})
		bus.stopErr = errors.New("connection refused")
		if err := m.Destroy(); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Destroy = %v", err)
		}
	})
}

// A Manager of a later command (nsnet update) asks for the version itself.
func TestSystemdSetWithoutCreate(t *testing.T) {
	m, bus, _, scope := newSystemdTest(t, "", Resources{})
	if err := os.MkdirAll(scope, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := populate(scope, v2Files); err != nil {
		t.Fatal(err)
	}
	bus.version = 241
	if err := m.Set(Resources{CPUs: 1}); err != nil {
		t.Fatal(err)
	}
	if got := bus.methods(); got != "Version Set" {
		t.Errorf("calls %q", got)
	}
	if got := bus.calls[1].props; !reflect.DeepEqual(got, []string{"CPUQuotaPerSecUSec t 1000000"}) {
		t.Errorf("Set on systemd 241 sent %q", got)
	}
	if got := readT(t, filepath.Join(scope, "cpu.max")); got != "100000 100000" {
		t.Errorf("cpu.max = %q", got)
	}
	if err := m.Apply(99); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(scope, "cgroup.procs")); got != "99" {
		t.Errorf("Apply without Create wrote cgroup.procs %q", got)
	}
}

func TestDefaultDriver(t *testing.T) {
	root := t.TempDir()
	if systemdIsInit(root) {
		t.Error("empty root: systemd")
	}
	if err := os.MkdirAll(filepath.Join(root, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "proc/1"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(root, "proc/1/comm"), "init\n")
	if systemdIsInit(root) {
		t.Error("PID 1 is init: systemd")
	}
	writeT(t, filepath.Join(root, "proc/1/comm"), "systemd\n")
	if !systemdIsInit(root) {
		t.Error("systemd not seen")
	}
	if got := DefaultDriver(mustDetect(t, hybridMountinfo, hybridSelf)); got != DriverCgroupfs {
		t.Errorf("DefaultDriver(hybrid) = %q", got)
	}
}

func TestParseSystemdVersion(t *testing.T) {
	for s, want := range map[string]int{`"252.22-1~deb12u1"`: 252, `"255"`: 255, `"v245.4-4ubuntu3"`: 245, "239": 239} {
		if got, err := parseSystemdVersion(s); err != nil || got != want {
			t.Errorf("parseSystemdVersion(%s) = %d, %v", s, got, err)
		}
	}
	for _, s := range []string{`""`, `"abc"`, `"0"`} {
		if _, err := parseSystemdVersion(s); err == nil {
			t.Errorf("parseSystemdVersion(%s) accepted", s)
		}
	}
}

func TestMapDBusError(t *testing.T) {
	exists := dbus.Error{Name: "org.freedesktop.systemd1.UnitExists", Body: []any{"Unit nsnet-c1.scope was already loaded or has a fragment file."}}
	if err := mapDBusError(exists); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("UnitExists -> %v", err)
	}
	missing := dbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit nsnet-c1.scope not loaded."})
	if err := mapDBusError(fmt.Errorf("call: %w", missing)); !errors.Is(err, ErrUnitNotFound) {
		t.Errorf("NoSuchUnit -> %v", err)
	}
	other := dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied"}
	if err := mapDBusError(other); errors.Is(err, ErrExists) || errors.Is(err, ErrUnitNotFound) || err.Error() != other.Error() {
		t.Errorf("AccessDenied -> %v", err)
	}
	if mapDBusError(nil) != nil {
		t.Error("nil error mapped")
	}
}

// Device rules have no unit property here: the v2 driver attaches them to
// the scope's directory once systemd has made it.
func TestSystemdDevicesGoToScope(t *testing.T) {
	m, _, _, scope := newSystemdTest(t, "", Resources{Devices: DefaultDevices()})
	var dirs []string
	var rules []DeviceRule
	m.(*systemdManager).v2.attachDevices = func(dir string, r []DeviceRule) error {
		dirs, rules = append(dirs, dir), r
		return nil
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 0 {
		t.Fatalf("device rules attached before the scope exists: %q", dirs)
	}
	if err := m.Apply(7); err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 1 || dirs[0] != scope || !reflect.DeepEqual(rules, DefaultDevices()) {
		t.Errorf("device rules attached to %q: %v", dirs, rules)
	}
}
