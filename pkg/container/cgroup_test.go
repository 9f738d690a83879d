package container

import (
	"reflect"
	"testing"

	"github.com/nsnet/nsnet/isolation"
	"github.com/nsnet/nsnet/isolation/cgroups"
)

func TestCgroupfs(t *testing.T) {
	v1 := func(mountpoint string, controllers ...string) cgroups.Hierarchy {
		return cgroups.Hierarchy{Controllers: controllers, Mountpoint: mountpoint, Root: "/", Own: "/"}
	}
	h := func(dir string, controllers ...string) isolation.CgroupHierarchy {
		return isolation.CgroupHierarchy{Dir: dir, Controllers: controllers}
	}
	tests := []struct {
		name string
		cg   *Cgroup
		want isolation.Cgroupfs
	}{
		{"no cgroup", nil, isolation.Cgroupfs{}},
		{"unified", &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeUnified, V2: &cgroups.Hierarchy{Mountpoint: "/sys/fs/cgroup", Root: "/", Own: "/user.slice"}}},
			isolation.Cgroupfs{V2: true}},
		{"legacy, co-mounted", &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeLegacy, V1: []cgroups.Hierarchy{
			v1("/sys/fs/cgroup/cpu,cpuacct", "cpu", "cpuacct"),
			v1("/sys/fs/cgroup/memory", "memory"),
			v1("/sys/fs/cgroup/net_cls,net_prio", "net_cls", "net_prio"),
		}}}, isolation.Cgroupfs{V1: []isolation.CgroupHierarchy{
			h("cpu,cpuacct", "cpu", "cpuacct"), h("memory", "memory"), h("net_cls,net_prio", "net_cls", "net_prio"),
		}}},
		{"hybrid", &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeHybrid, V1: []cgroups.Hierarchy{
			v1("/sys/fs/cgroup/cpu", "cpu"), v1("/sys/fs/cgroup/pids", "pids"),
		}}}, isolation.Cgroupfs{V1: []isolation.CgroupHierarchy{h("cpu", "cpu"), h("pids", "pids")}}},
		{"hybrid with name=systemd", &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeHybrid, V1: []cgroups.Hierarchy{
			v1("/sys/fs/cgroup/memory", "memory"),
			{Name: "systemd", Mountpoint: "/sys/fs/cgroup/systemd", Root: "/", Own: "/"},
		}}}, isolation.Cgroupfs{V1: []isolation.CgroupHierarchy{h("memory", "memory"), {Dir: "systemd", Name: "systemd"}}}},
		{"name=systemd laid out by hand", &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeLegacy, V1: []cgroups.Hierarchy{
			v1("/a/cg", "memory"),
			{Name: "systemd", Mountpoint: "/b/cg", Root: "/", Own: "/"},
		}}}, isolation.Cgroupfs{V1: []isolation.CgroupHierarchy{h("cg", "memory"), {Dir: "systemd", Name: "systemd"}}}},
		{"laid out by hand", &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeLegacy, V1: []cgroups.Hierarchy{
			v1("/", "memory"),
			v1("/a/cg", "cpu"),
			v1("/b/cg", "pids"),
			v1("/c/pids", "blkio"),
			v1("/d/freezer", "cpuset"),
			// Neither its directory's name nor its controllers' is free.
			v1("/e/freezer", "freezer"),
		}}}, isolation.Cgroupfs{V1: []isolation.CgroupHierarchy{
			h("memory", "memory"), h("cg", "cpu"), h("pids", "pids"), h("blkio", "blkio"), h("freezer", "cpuset"),
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cg.cgroupfs(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("cgroupfs = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCgroupDrop: a hierarchy the driver skipped leaves the recorded
// layout, and so the container's /sys/fs/cgroup, without changing a
// layout shared with another record.
func TestCgroupDrop(t *testing.T) {
	hs := []cgroups.Hierarchy{
		{Controllers: []string{"memory"}, Mountpoint: "/sys/fs/cgroup/memory", Root: "/", Own: "/"},
		{Name: "systemd", Mountpoint: "/sys/fs/cgroup/systemd", Root: "/", Own: "/"},
	}
	cg := &Cgroup{Layout: cgroups.Layout{Mode: cgroups.ModeHybrid, V1: hs}}
	cg.drop("/sys/fs/cgroup/systemd")
	want := isolation.Cgroupfs{V1: []isolation.CgroupHierarchy{{Dir: "memory", Controllers: []string{"memory"}}}}
	if got := cg.cgroupfs(); !reflect.DeepEqual(got, want) {
		t.Errorf("after drop cgroupfs = %+v, want %+v", got, want)
	}
	if hs[1].Name != "systemd" {
		t.Errorf("drop changed the caller's slice: %+v", hs)
	}
}
