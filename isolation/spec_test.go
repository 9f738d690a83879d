package isolation

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/isolation/caps"
	"github.com/nsnet/nsnet/isolation/rootfs"
)

func TestParseVolume(t *testing.T) {
	tests := []struct {
		in   string
		want Volume
		err  bool
	}{
		{in: "/a:/b", want: Volume{Source: "/a", Target: "/b"}},
		{in: "/a:/b:ro", want: Volume{Source: "/a", Target: "/b", ReadOnly: true}},
		{in: "/a:/b:rw", want: Volume{Source: "/a", Target: "/b"}},
		{in: "/a/../c:/b", want: Volume{Source: "/c", Target: "/b"}},
		{in: "/a", err: true},
		{in: "/a:/b:rx", err: true},
		{in: ":/b", err: true},
		{in: "/a:", err: true},
		{in: "/a:/b:ro:x", err: true},
	}
	for _, tt := range tests {
		got, err := ParseVolume(tt.in)
		if tt.err {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("ParseVolume(%q) error = %v, want ErrInvalidSpec", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseVolume(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseIDMap(t *testing.T) {
	tests := []struct {
		in   string
		want IDMap
		err  bool
	}{
		{in: "0:1000:1", want: IDMap{0, 1000, 1}},
		{in: "0:100000:65536", want: IDMap{0, 100000, 65536}},
		{in: "0:1000", err: true},
		{in: "0:1000:0", err: true},
		{in: "0:-1:1", err: true},
		{in: "a:1:1", err: true},
		{in: "0:0:4294967295", want: IDMap{0, 0, 4294967295}},
		{in: "1:0:4294967295", err: true},
		{in: "0:4294967295:1", err: true},
	}
	for _, tt := range tests {
		got, err := ParseIDMap(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseIDMap(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestCheckSysctl(t *testing.T) {
	tests := []struct {
		key     string
		hostNet bool
		ok      bool
	}{
		{"kernel.shmmax", false, true},
		{"kernel.msgmnb", true, true},
		{"fs.mqueue.msg_max", false, true},
		{"net.ipv4.ip_forward", false, true},
		{"net.ipv4.ip_forward", true, false},
		{"kernel.domainname", false, true},
		{"kernel.hostname", false, false},
		{"kernel.panic", false, false},
		{"vm.swappiness", false, false},
		{"net/ipv4/ip_forward", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		err := checkSysctl(tt.key, tt.hostNet)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidSpec)) {
			t.Errorf("checkSysctl(%q, hostNet=%v) = %v", tt.key, tt.hostNet, err)
		}
	}
}

func TestDefaultEnv(t *testing.T) {
	got := defaultEnv([]string{"A=1", "HOME=/home/x"}, "box")
	want := []string{"A=1", "HOME=/home/x", "PATH=" + defaultPath, "HOSTNAME=box"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaultEnv = %q, want %q", got, want)
	}
	got = defaultEnv([]string{"PATH=/bin", "HOSTNAME=mine"}, "box")
	want = []string{"PATH=/bin", "HOSTNAME=mine", "HOME=/root"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("defaultEnv = %q, want %q", got, want)
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ok := Spec{Args: []string{"sh"}}
	with := func(f func(*Spec)) Spec { s := ok; f(&s); return s }
	invalid := []struct {
		name string
		spec Spec
	}{
		{"no command", Spec{}},
		{"relative cwd", with(func(s *Spec) { s.Cwd = "tmp" })},
		{"bad hostname", with(func(s *Spec) { s.Hostname = "a b" })},
		{"long hostname", with(func(s *Spec) { s.Hostname = strings.Repeat("a", 65) })},
		{"rootfs is a file", with(func(s *Spec) { s.Rootfs = file })},
		{"missing rootfs", with(func(s *Spec) { s.Rootfs = filepath.Join(dir, "none") })},
		{"relative volume target", with(func(s *Spec) { s.Volumes = []Volume{{Source: dir, Target: "data"}} })},
		{"volume on /", with(func(s *Spec) { s.Volumes = []Volume{{Source: dir, Target: "/"}} })},
		{"volume on /proc", with(func(s *Spec) { s.Volumes = []Volume{{Source: dir, Target: "/proc"}} })},
		{"volume in /sys", with(func(s *Spec) { s.Volumes = []Volume{{Source: dir, Target: "/sys/kernel/"}} })},
		{"etc file outside /etc", with(func(s *Spec) { s.EtcFiles = map[string]string{"/usr/hosts": file} })},
		{"etc file is a directory", with(func(s *Spec) { s.EtcFiles = map[string]string{"/etc/hosts": dir} })},
		{"relative netns", with(func(s *Spec) { s.NetNS = "netns" })},
		{"netns path with userns", with(func(s *Spec) { s.NetNS = "/run/netns/x"; s.UserNS = true })},
		{"maps without userns", with(func(s *Spec) { s.UIDMap = []IDMap{{0, 1000, 1}} })},
		{"map without root", with(func(s *Spec) { s.UserNS = true; s.UIDMap = []IDMap{{1, 1000, 1}} })},
		{"empty map", with(func(s *Spec) { s.UserNS = true; s.GIDMap = []IDMap{{0, 1000, 0}} })},
		{"map past the last id", with(func(s *Spec) { s.UserNS = true; s.UIDMap = []IDMap{{0, 1 << 32, 1}} })},
		{"unknown capability", with(func(s *Spec) { s.CapAdd = []string{"FLY"} })},
		{"shared propagation", with(func(s *Spec) { s.Propagation = "shared" })},
		{"net sysctl with host net", with(func(s *Spec) { s.NetNS = "host"; s.Sysctls = map[string]string{"net.ipv4.ip_forward": "1"} })},
		{"exec socket without init", with(func(s *Spec) { s.ExecSocket = "/run/x.sock" })},
		{"relative exec socket", with(func(s *Spec) { s.Init = true; s.ExecSocket = "x.sock" })},
		{"long exec socket path", with(func(s *Spec) { s.Init = true; s.ExecSocket = "/" + strings.Repeat("a", 107) })},
	}
	for _, tt := range invalid {
		if _, err := tt.spec.resolve(); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: resolve error = %v, want ErrInvalidSpec", tt.name, err)
		}
	}

	c, err := Spec{
		Args:       []string{"sh"},
		Cwd:        "/work",
		Rootfs:     dir + "/.",
		Volumes:    []Volume{{Source: dir, Target: "/data/", ReadOnly: true}},
		EtcFiles:   map[string]string{"/etc/resolv.conf": file, "/etc/hosts": file},
		CapDrop:    []string{"NET_RAW"},
		NetNS:      "host",
		Init:       true,
		ExecSocket: "/run/exec.sock",
	}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.Rootfs.Rootfs != dir || c.Rootfs.Workdir != "/work" || c.Net != netHost || c.Caps.Has(13) || c.Caps != caps.Default&^caps.Of(13) || !c.ExecSocket {
		t.Fatalf("resolved %+v", c)
	}
	wantBinds := "/etc/hosts /etc/resolv.conf /data"
	var got []string
	for _, b := range c.Rootfs.Binds {
		got = append(got, b.Target)
	}
	if strings.Join(got, " ") != wantBinds || !c.Rootfs.Binds[2].ReadOnly {
		t.Fatalf("binds %+v, want targets %s with the volume read-only", c.Rootfs.Binds, wantBinds)
	}
}

func TestResolveCgroupfs(t *testing.T) {
	memory := CgroupHierarchy{Dir: "memory", Controllers: []string{"memory"}}
	cpu := CgroupHierarchy{Dir: "cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}}
	tests := []struct {
		name string
		in   Cgroupfs
		want rootfs.Cgroups
		err  bool
	}{
		{name: "none"},
		{name: "v2", in: Cgroupfs{V2: true}, want: rootfs.Cgroups{V2: true}},
		{name: "v1", in: Cgroupfs{V1: []CgroupHierarchy{cpu, memory}}, want: rootfs.Cgroups{V1: []rootfs.CgroupV1{
			{Dir: "cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}},
			{Dir: "memory", Controllers: []string{"memory"}},
		}}},
		{name: "v1 and v2", in: Cgroupfs{V2: true, V1: []CgroupHierarchy{memory}}, err: true},
		{name: "empty dir", in: Cgroupfs{V1: []CgroupHierarchy{{Controllers: []string{"memory"}}}}, err: true},
		{name: "dot dot", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "..", Controllers: []string{"memory"}}}}, err: true},
		{name: "dir with a slash", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "a/memory", Controllers: []string{"memory"}}}}, err: true},
		{name: "dir twice", in: Cgroupfs{V1: []CgroupHierarchy{memory, {Dir: "memory", Controllers: []string{"pids"}}}}, err: true},
		{name: "no controllers", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "memory"}}}, err: true},
		{name: "option in a controller", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "memory", Controllers: []string{"memory,name=x"}}}}, err: true},
		{name: "name as a controller", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "systemd", Controllers: []string{"name=systemd"}}}}, err: true},
		{name: "named hierarchy", in: Cgroupfs{V1: []CgroupHierarchy{memory, {Dir: "systemd", Name: "systemd"}}}, want: rootfs.Cgroups{V1: []rootfs.CgroupV1{
			{Dir: "memory", Controllers: []string{"memory"}},
			{Dir: "systemd", Name: "systemd"},
		}}},
		{name: "named hierarchy with controllers", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "systemd", Name: "systemd", Controllers: []string{"cpu"}}}}, err: true},
		{name: "option in a name", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "systemd", Name: "systemd,cpu"}}}, err: true},
		{name: "upper case", in: Cgroupfs{V1: []CgroupHierarchy{{Dir: "memory", Controllers: []string{"Memory"}}}}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.resolve()
			if tt.err {
				if !errors.Is(err, ErrInvalidSpec) {
					t.Fatalf("resolve error = %v, want ErrInvalidSpec", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("resolve = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	// resolve copies the controllers: the caller may reuse its slices.
	in := Cgroupfs{V1: []CgroupHierarchy{{Dir: "memory", Controllers: []string{"memory"}}}}
	got, _ := in.resolve()
	in.V1[0].Controllers[0] = "pids"
	if got.V1[0].Controllers[0] != "memory" {
		t.Fatal("resolve kept the caller's slice")
	}
	c, err := Spec{Args: []string{"sh"}, Cgroupfs: Cgroupfs{V2: true}}.resolve()
	if err != nil || !c.Rootfs.Cgroups.V2 {
		t.Fatalf("Spec.resolve: %+v, %v; want cgroup2 mounted", c.Rootfs.Cgroups, err)
	}
	if _, err := (Spec{Args: []string{"sh"}, Cgroupfs: Cgroupfs{V1: []CgroupHierarchy{{Dir: "x"}}}}).resolve(); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("Spec.resolve of a bad hierarchy: %v, want ErrInvalidSpec", err)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"tool": 0o755, "data": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PATH=/nonexistent:" + dir}
	if p, err := lookPath("/", "tool", env); err != nil || p != dir+"/tool" {
		t.Fatalf("lookPath(tool) = %q, %v", p, err)
	}
	if _, err := lookPath("/", "data", env); err == nil {
		t.Fatal("found a non-executable file")
	}
	if _, err := lookPath("/", "missing", env); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("lookPath(missing) error = %v", err)
	}
	if p, err := lookPath("/", dir+"/tool", nil); err != nil || p != dir+"/tool" {
		t.Fatalf("lookPath(absolute) = %q, %v", p, err)
	}
	// Relative names are looked up in the given directory, not the
	// process's, and stay relative to it.
	if p, err := lookPath(dir, "./tool", nil); err != nil || p != "./tool" {
		t.Fatalf("lookPath(./tool in dir) = %q, %v", p, err)
	}
	if p, err := lookPath(filepath.Dir(dir), "tool", []string{"PATH=" + filepath.Base(dir)}); err != nil || p != filepath.Base(dir)+"/tool" {
		t.Fatalf("lookPath(tool, relative PATH) = %q, %v", p, err)
	}
}

func FuzzParseVolume(f *testing.F) {
	for _, s := range []string{"/a:/b", "/a:/b:ro", "/a:/b:rw", "/a/../c:/b", "/a", "/a:/b:rx", ":/b", "/a:",
		"/a:/b:ro:x", "rel/dir:/b", ".:/b", "/a:b", "//a//b/:/c/", "/a\x00:/b", "/a:/b:", "/a::ro", "/a:/b:RO"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVolume(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("ParseVolume(%q) error %v is not ErrInvalidSpec", s, err)
			}
			return
		}
		if !filepath.IsAbs(v.Source) || filepath.Clean(v.Source) != v.Source {
			t.Fatalf("ParseVolume(%q) source %q is not absolute and clean", s, v.Source)
		}
		// The container path is passed on as written: Start checks and
		// cleans it with the other mount targets.
		host, rest, _ := strings.Cut(s, ":")
		target, mode, _ := strings.Cut(rest, ":")
		if host == "" || v.Target != target || v.ReadOnly != (mode == "ro") {
			t.Fatalf("ParseVolume(%q) = %+v, not what the text says", s, v)
		}
		text := v.Source + ":" + v.Target
		if v.ReadOnly {
			text += ":ro"
		}
		if back, err := ParseVolume(text); err != nil || back != v {
			t.Fatalf("ParseVolume(%q) = %+v, but its text %q parses to %+v, %v", s, v, text, back, err)
		}
	})
}

func FuzzParseIDMap(f *testing.F) {
	for _, s := range []string{"0:1000:1", "0:100000:65536", "0:1000", "0:1000:0", "0:-1:1", "a:1:1",
		"0:0:4294967295", "1:0:4294967295", "0:4294967295:1", "4294967294:0:1", "0:0:4294967296", "+1:0:1", "0:0:1:", " 0:0:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIDMap(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("ParseIDMap(%q) error %v is not ErrInvalidSpec", s, err)
			}
			return
		}
		// The kernel refuses a uid_map line whose ranges wrap around
		// 32 bits or reach id 4294967295, which stands for "no id".
		if m.Size < 1 || m.ContainerID < 0 || m.HostID < 0 ||
			m.ContainerID+m.Size > math.MaxUint32 || m.HostID+m.Size > math.MaxUint32 {
			t.Fatalf("ParseIDMap(%q) = %+v, not a range of valid ids", s, m)
		}
		text := fmt.Sprintf("%d:%d:%d", m.ContainerID, m.HostID, m.Size)
		if back, err := ParseIDMap(text); err != nil || back != m {
			t.Fatalf("ParseIDMap(%q) = %+v, but its text %q parses to %+v, %v", s, m, text, back, err)
		}
		if m.ContainerID == 0 {
			if err := checkIDMaps([]IDMap{m}); err != nil {
				t.Fatalf("ParseIDMap(%q) = %+v, which Start refuses: %v", s, m, err)
			}
		}
	})
}
