package cgroups

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestDetect(t *testing.T) {
	legacy := strings.Replace(hybridMountinfo, "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "", 1)
	comounted := "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n" +
		"35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
	for _, tc := range []struct {
		name, mi, self string
		mode           Mode
		want           []Hierarchy
		v2             *Hierarchy
		err            error
	}{
		{name: "unified", mi: unifiedMountinfo, self: unifiedSelf, mode: ModeUnified,
			v2: &Hierarchy{Mountpoint: "/sys/fs/cgroup", Root: "/", Own: "/user.slice/session-1.scope"}},
		{name: "hybrid", mi: hybridMountinfo, self: hybridSelf, mode: ModeHybrid},
		{name: "legacy", mi: legacy, self: hybridSelf, mode: ModeLegacy},
		{name: "comounted and bind-mounted subtree", mi: comounted, self: "2:cpu,cpuacct:/a\n1:memory:/docker/x/y\n", mode: ModeLegacy,
			want: []Hierarchy{
				{Controllers: []string{"cpu", "cpuacct"}, Mountpoint: "/sys/fs/cgroup/cpu,cpuacct", Root: "/", Own: "/a"},
				{Controllers: []string{"memory"}, Mountpoint: "/sys/fs/cgroup/memory", Root: "/docker/x", Own: "/docker/x/y"},
			}},
		{name: "none", mi: "22 1 0:21 / /proc rw - proc proc rw\n", self: "", err: ErrNoCgroups},
		{name: "hybrid keeps name=systemd, ignores other named hierarchies", mi: hybridMountinfo +
			"42 31 0:39 / /sys/fs/cgroup/elogind rw - cgroup cgroup rw,name=elogind\n" +
			"43 31 0:37 / /mnt/systemd-again rw - cgroup cgroup rw,name=systemd\n",
			self: "10:name=elogind:/e\n" + strings.Replace(hybridSelf, "name=systemd:/", "name=systemd:/user.slice/s.scope", 1), mode: ModeHybrid,
			want: append(slices.Clone(hybridControllers), Hierarchy{Name: "systemd", Mountpoint: "/sys/fs/cgroup/systemd", Root: "/", Own: "/user.slice/s.scope"})},
		{name: "name=systemd missing from self", mi: hybridMountinfo, self: strings.Replace(hybridSelf, "9:name=systemd:/\n", "", 1), mode: ModeHybrid,
			want: hybridControllers},
		{name: "name=systemd bind-mounted subtree", mi: "35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
			"40 31 0:37 /docker/x /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n",
			self: "2:name=systemd:/docker/x\n1:memory:/docker/x\n", mode: ModeLegacy,
			want: []Hierarchy{
				{Controllers: []string{"memory"}, Mountpoint: "/sys/fs/cgroup/memory", Root: "/docker/x", Own: "/docker/x"},
				{Name: "systemd", Mountpoint: "/sys/fs/cgroup/systemd", Root: "/docker/x", Own: "/docker/x"},
			}},
		{name: "unified ignores name=systemd", mi: unifiedMountinfo + "40 30 0:37 / /run/systemd-v1 rw - cgroup cgroup rw,name=systemd\n",
			self: "1:name=systemd:/\n" + unifiedSelf, mode: ModeUnified,
			v2: &Hierarchy{Mountpoint: "/sys/fs/cgroup", Root: "/", Own: "/user.slice/session-1.scope"}},
		{name: "repeated option, nsfs mount, hierarchy mounted twice", mi: "32 31 0:29 / /a rw - cgroup cgroup rw,cpu,cpuacct,cpu\n" +
			"50 30 0:4 net:[4026532200] /run/netns/x rw - nsfs nsfs rw\n" +
			"33 31 0:29 /x /b rw - cgroup cgroup rw,cpu,cpuacct\n", self: "2:cpu,cpuacct:/x/y\n", mode: ModeLegacy,
			want: []Hierarchy{{Controllers: []string{"cpu", "cpuacct"}, Mountpoint: "/a", Root: "/", Own: "/x/y"}}},
		{name: "only name=systemd", mi: "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n", self: "1:name=systemd:/\n", err: ErrNoCgroups},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Detect(strings.NewReader(tc.mi), strings.NewReader(tc.self))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Mode != tc.mode {
				t.Errorf("mode = %v, want %v", l.Mode, tc.mode)
			}
			if tc.mode == ModeUnified && l.V1 != nil {
				t.Errorf("unified host with V1 = %+v", l.V1)
			}
			if tc.want != nil && !reflect.DeepEqual(l.V1, tc.want) {
				t.Errorf("V1 = %+v\nwant %+v", l.V1, tc.want)
			}
			if !reflect.DeepEqual(l.V2, tc.v2) {
				t.Errorf("V2 = %+v, want %+v", l.V2, tc.v2)
			}
		})
	}
}

// hybridControllers are the controller hierarchies of hybridMountinfo.
var hybridControllers = []Hierarchy{
	{Controllers: []string{"cpu"}, Mountpoint: "/sys/fs/cgroup/cpu", Root: "/", Own: "/"},
	{Controllers: []string{"cpuacct"}, Mountpoint: "/sys/fs/cgroup/cpuacct", Root: "/", Own: "/"},
	{Controllers: []string{"cpuset"}, Mountpoint: "/sys/fs/cgroup/cpuset", Root: "/", Own: "/"},
	{Controllers: []string{"memory"}, Mountpoint: "/sys/fs/cgroup/memory", Root: "/", Own: "/process_api/abc"},
	{Controllers: []string{"devices"}, Mountpoint: "/sys/fs/cgroup/devices", Root: "/", Own: "/"},
	{Controllers: []string{"freezer"}, Mountpoint: "/sys/fs/cgroup/freezer", Root: "/", Own: "/"},
	{Controllers: []string{"blkio"}, Mountpoint: "/sys/fs/cgroup/blkio", Root: "/", Own: "/"},
	{Controllers: []string{"pids"}, Mountpoint: "/sys/fs/cgroup/pids", Root: "/", Own: "/"},
}

func TestDetectHybridOwnPaths(t *testing.T) {
	l := mustDetect(t, hybridMountinfo, hybridSelf)
	got := map[string]string{}
	for _, h := range l.V1 {
		for _, c := range h.Controllers {
			got[c] = h.Own
		}
	}
	want := map[string]string{"cpu": "/", "cpuacct": "/", "cpuset": "/", "memory": "/process_api/abc",
		"devices": "/", "freezer": "/", "blkio": "/", "pids": "/"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("own = %v, want %v", got, want)
	}
}

func TestDetectErrors(t *testing.T) {
	for _, tc := range []struct{ name, mi, self string }{
		{"malformed mountinfo", "garbage line\n", ""},
		{"malformed self", unifiedMountinfo, "0:/x\n"},
		{"controller missing from self", hybridMountinfo, "0::/\n"},
		{"v2 without 0:: line", unifiedMountinfo, "1:name=systemd:/\n"},
		{"relative mount point", "32 31 0:29 / memory rw - cgroup cgroup rw,memory\n", "3:memory:/\n"},
		{"root is no path", "32 31 0:29 cgroup:[1] /a rw - cgroup2 cgroup2 rw\n", "0::/\n"},
		{"controller in two hierarchies", "32 31 0:29 / /a rw - cgroup cgroup rw,memory\n33 31 0:30 / /b rw - cgroup cgroup rw,cpu,memory\n", "3:memory:/\n2:cpu:/\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Detect(strings.NewReader(tc.mi), strings.NewReader(tc.self)); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\\`: `/x\\`, `/t\011`: "/t\t"} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDetectThisHost reads the real /proc files, read-only, as a fixture.
func TestDetectThisHost(t *testing.T) {
	if _, err := os.Stat("/proc/self/mountinfo"); err != nil {
		t.Skip("no /proc")
	}
	l, err := DetectHost()
	if errors.Is(err, ErrNoCgroups) {
		t.Skip("no cgroups mounted here")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("host cgroup mode %v, %d v1 hierarchies", l.Mode, len(l.V1))
}

func TestPlacement(t *testing.T) {
	h := Hierarchy{Mountpoint: "/sys/fs/cgroup/memory", Root: "/", Own: "/process_api/abc"}
	sub := Hierarchy{Mountpoint: "/sys/fs/cgroup/memory", Root: "/docker/x", Own: "/docker/x/y"}
	for _, tc := range []struct {
		name, parent, id string
		h                Hierarchy
		rel              string
		levels           []string
		err              bool
	}{
		{name: "default parent", id: "c1", h: h, rel: "nsnet/c1",
			levels: []string{"/p/sys/fs/cgroup/memory/process_api/abc/nsnet", "/p/sys/fs/cgroup/memory/process_api/abc/nsnet/c1"}},
		{name: "nested relative", parent: "a/b", id: "c1", h: h, rel: "a/b/c1",
			levels: []string{"/p/sys/fs/cgroup/memory/process_api/abc/a", "/p/sys/fs/cgroup/memory/process_api/abc/a/b", "/p/sys/fs/cgroup/memory/process_api/abc/a/b/c1"}},
		{name: "absolute parent", parent: "/x", id: "c1", h: h, rel: "/x/c1",
			levels: []string{"/p/sys/fs/cgroup/memory/x", "/p/sys/fs/cgroup/memory/x/c1"}},
		{name: "bind-mounted subtree", id: "c1", h: sub, rel: "nsnet/c1",
			levels: []string{"/p/sys/fs/cgroup/memory/y/nsnet", "/p/sys/fs/cgroup/memory/y/nsnet/c1"}},
		{name: "absolute parent outside the mounted subtree", parent: "/x", id: "c1", h: sub, err: true},
		{name: "dotdot parent", parent: "../x", id: "c1", h: h, err: true},
		{name: "slash in id", id: "a/b", h: h, err: true},
		{name: "dotdot id", id: "..", h: h, err: true},
		{name: "empty id", id: "", h: h, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rel, err := relPath(tc.parent, tc.id)
			var levels []string
			if err == nil {
				b := base{rel: rel, cfg: Config{Prefix: "/p"}}
				levels, err = b.placement(tc.h)
			}
			if tc.err {
				if err == nil {
					t.Fatalf("no error, levels %v", levels)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rel != tc.rel || !reflect.DeepEqual(levels, tc.levels) {
				t.Errorf("rel %q levels %v\nwant %q %v", rel, levels, tc.rel, tc.levels)
			}
		})
	}
}

func FuzzDetect(f *testing.F) {
	legacy := strings.Replace(hybridMountinfo, "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "", 1)
	for _, s := range [][2]string{
		{unifiedMountinfo, unifiedSelf},
		{hybridMountinfo, hybridSelf},
		{legacy, hybridSelf},
		{"32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			"2:cpu,cpuacct:/a\n1:memory:/docker/x/y\n"},
		{hybridMountinfo + "42 31 0:39 / /sys/fs/cgroup/elogind rw - cgroup cgroup rw,name=elogind\n43 31 0:37 / /mnt/systemd-again rw - cgroup cgroup rw,name=systemd\n",
			"10:name=elogind:/e\n" + hybridSelf},
		{unifiedMountinfo + "40 30 0:37 / /run/systemd-v1 rw - cgroup cgroup rw,name=systemd\n", "1:name=systemd:/\n" + unifiedSelf},
		{"40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n", "1:name=systemd:/\n"},
		// Escaped paths, an nsfs bind mount (its root is no path), a
		// cgroup namespace's view of an outer mount.
		{`30 22 0:26 /../.. /sys/fs/cgroup/a\040b\134 rw - cgroup2 cgroup2 rw` + "\n" +
			"50 30 0:4 net:[4026532200] /run/netns/x rw - nsfs nsfs rw\n", "0::/../x\n"},
		// A hierarchy mounted twice, and one that overlaps it.
		{"32 31 0:29 / /a rw - cgroup cgroup rw,cpu,cpuacct\n33 31 0:29 /x /b rw - cgroup cgroup rw,cpu,cpuacct\n" +
			"34 31 0:30 / /c rw - cgroup cgroup rw,cpuacct,memory\n", "2:cpu,cpuacct:/\n3:memory:/\n"},
		{"32 31 0:29 / /a rw - cgroup2 cgroup2\n", "0::/\n"},
		{"32 31 0:29 / /a rw -  - cgroup cgroup rw,cpu\n", "0:cpu:/\n"},
		{"32 31 0:29 / /a rw - cgroup cgroup rw,memory,memory\n", "3:memory:/\n"},
		{"32 31 0:29 / /a rw - cgroup cgroup rw,memory\n33 31 0:30 / /b rw - cgroup cgroup rw,cpu,memory\n", "3:memory:/\n2:cpu:/\n"},
		{"32 31 0:29 / a rw - cgroup cgroup rw,memory\n", "3:memory:/\n"},
		{"garbage line\n", ""},
		{unifiedMountinfo, "0:/x\n"},
		{unifiedMountinfo, "1:name=systemd:/\n"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, mountinfo, self string) {
		l, err := Detect(strings.NewReader(mountinfo), strings.NewReader(self))
		if err != nil {
			return
		}
		own, ownV2, err := ParseSelfCgroup(strings.NewReader(self))
		if err != nil {
			t.Fatalf("Detect accepted a /proc/self/cgroup that ParseSelfCgroup refuses: %v", err)
		}
		abs := func(h Hierarchy) {
			t.Helper()
			if !strings.HasPrefix(h.Mountpoint, "/") || !strings.HasPrefix(h.Root, "/") || !strings.HasPrefix(h.Own, "/") {
				t.Fatalf("hierarchy %+v has a path that is not absolute", h)
			}
		}
		switch l.Mode {
		case ModeUnified:
			if l.V2 == nil || len(l.V1) > 0 {
				t.Fatalf("unified layout %+v", l)
			}
			abs(*l.V2)
			if len(l.V2.Controllers) > 0 || l.V2.Name != "" || l.V2.Own != ownV2 {
				t.Fatalf("v2 hierarchy %+v (own %q)", *l.V2, ownV2)
			}
			return
		case ModeLegacy, ModeHybrid:
			if l.V2 != nil || len(l.V1) == 0 || len(l.V1[0].Controllers) == 0 {
				t.Fatalf("%v layout %+v", l.Mode, l)
			}
		default:
			t.Fatalf("layout of mode %v", l.Mode)
		}
		seen := map[string]bool{}
		for i, h := range l.V1 {
			abs(h)
			if len(h.Controllers) == 0 {
				// The named systemd hierarchy, last.
				if h.Name != NamedSystemd || i != len(l.V1)-1 || h.Own != own["name="+NamedSystemd] {
					t.Fatalf("named hierarchy %d of %d: %+v", i, len(l.V1), h)
				}
				continue
			}
			if h.Name != "" || h.Own != own[h.Controllers[0]] {
				t.Fatalf("controller hierarchy %+v", h)
			}
			for _, c := range h.Controllers {
				if !v1Controllers[c] || seen[c] {
					t.Fatalf("controller %q unknown or in two hierarchies: %+v", c, l.V1)
				}
				seen[c] = true
			}
		}
	})
}

func FuzzParseSelfCgroup(f *testing.F) {
	for _, s := range []string{hybridSelf, unifiedSelf, "0:/x\n", "1:name=systemd:/\n", "10:name=elogind:/e\n",
		"2:cpu,cpuacct:/a\n1:memory:/docker/x/y\n", "0::/../x\n", "0::/a\n0::/b\n", "1:cpu:/a:b\n", "1:cpu,bogus,:/a\n", "5::/x\n", "1:cpu:x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		own, ownV2, err := ParseSelfCgroup(strings.NewReader(s))
		if err != nil {
			return
		}
		if ownV2 != "" && !strings.HasPrefix(ownV2, "/") {
			t.Fatalf("v2 path %q is not absolute", ownV2)
		}
		for c, p := range own {
			if !v1Controllers[c] && !strings.HasPrefix(c, "name=") || !strings.HasPrefix(p, "/") {
				t.Fatalf("own[%q] = %q", c, p)
			}
		}
	})
}
