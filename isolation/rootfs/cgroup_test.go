package rootfs

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCgroupLinks(t *testing.T) {
	tests := []struct {
		name string
		in   []CgroupV1
		want []cgroupLink
	}{
		{"none", nil, nil},
		{"one controller each", []CgroupV1{
			{Dir: "memory", Controllers: []string{"memory"}},
			{Dir: "pids", Controllers: []string{"pids"}},
		}, nil},
		{"co-mounted", []CgroupV1{
			{Dir: "cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}},
			{Dir: "memory", Controllers: []string{"memory"}},
			{Dir: "net_cls,net_prio", Controllers: []string{"net_cls", "net_prio"}},
		}, []cgroupLink{
			{"cpu", "cpu,cpuacct"}, {"cpuacct", "cpu,cpuacct"},
			{"net_cls", "net_cls,net_prio"}, {"net_prio", "net_cls,net_prio"},
		}},
		// A name that is a directory already is not linked over.
		{"name taken by a directory", []CgroupV1{
			{Dir: "cpuacct,cpu", Controllers: []string{"cpu", "cpuacct"}},
			{Dir: "cpu", Controllers: []string{"memory"}},
		}, []cgroupLink{{"cpuacct", "cpuacct,cpu"}, {"memory", "cpu"}}},
		// A directory named after none of its controllers.
		{"mounted under another name", []CgroupV1{
			{Dir: "mem", Controllers: []string{"memory"}},
		}, []cgroupLink{{"memory", "mem"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cgroupLinks(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("cgroupLinks = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCgroupMountFlags(t *testing.T) {
	const always = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if got := cgroupMountFlags(false); got != always|unix.MS_RDONLY {
		t.Errorf("unprivileged: flags %#x, want %#x", got, always|unix.MS_RDONLY)
	}
	if got := cgroupMountFlags(true); got != always {
		t.Errorf("privileged: flags %#x, want %#x", got, always)
	}
}

func TestCgroupV1Options(t *testing.T) {
	for _, tc := range []struct {
		h    CgroupV1
		want string
	}{
		{CgroupV1{Dir: "cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}}, "cpu,cpuacct"},
		{CgroupV1{Dir: "memory", Controllers: []string{"memory"}}, "memory"},
		// Without "none" the kernel would take a bare name= to mean
		// every controller besides.
		{CgroupV1{Dir: "systemd", Name: "systemd"}, "none,name=systemd"},
	} {
		if got := tc.h.options(); got != tc.want {
			t.Errorf("options of %+v = %q, want %q", tc.h, got, tc.want)
		}
	}
}
