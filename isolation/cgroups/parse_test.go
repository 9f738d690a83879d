package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestMerge(t *testing.T) {
	old := Resources{Memory: 64 << 20, CPUs: 1, PidsLimit: 100, CpusetCpus: "0",
		DeviceReadBps: []DeviceRate{{8, 0, 1}, {8, 16, 2}}}
	for _, tc := range []struct {
		name string
		upd  Resources
		want Resources
	}{
		{"nothing", Resources{}, old},
		{"memory only", Resources{Memory: 32 << 20},
			Resources{Memory: 32 << 20, CPUs: 1, PidsLimit: 100, CpusetCpus: "0", DeviceReadBps: old.DeviceReadBps}},
		{"lift limits", Resources{CPUs: Unlimited, PidsLimit: Unlimited},
			Resources{Memory: 64 << 20, CPUs: Unlimited, PidsLimit: Unlimited, CpusetCpus: "0", DeviceReadBps: old.DeviceReadBps}},
		{"one device rate", Resources{DeviceReadBps: []DeviceRate{{8, 16, 5}}},
			Resources{Memory: 64 << 20, CPUs: 1, PidsLimit: 100, CpusetCpus: "0", DeviceReadBps: []DeviceRate{{8, 16, 5}, {8, 0, 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := old.Merge(tc.upd); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Merge = %+v, want %+v", got, tc.want)
			}
		})
	}
	if !(Resources{}).IsZero() || (Resources{PidsLimit: 1}).IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestParseDeviceRateErrors(t *testing.T) {
	for _, s := range []string{"", "/dev/null", ":1mb", "/dev/null:", "/dev/null:1mb", "/nonexistent:1mb", "/dev/loop0:0", "/dev/loop0:-1", "/dev/loop0:1zb"} {
		if _, err := ParseDeviceRate(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDeviceRate(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// TestRemoveEmptyParents: a parent made by another Manager is removed
// once empty only with RemoveEmptyParents, and never while another
// container's cgroup is in it.
func TestRemoveEmptyParents(t *testing.T) {
	l, prefix, own := fakeV2(t, allControllers)
	mk := func(id string, remove bool) Manager {
		m, err := New(l, Config{ID: id, Host: testHost(), Prefix: prefix, Dirs: fakeDirs{v2Files}, RemoveEmptyParents: remove})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := mk("a", true), mk("b", true)
	if err := a.Create(); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(own, DefaultParent)
	// a made the parent but b is still in it.
	if err := a.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(parent); err != nil {
		t.Fatalf("parent removed while b is in it: %v", err)
	}
	if err := b.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(parent); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty default parent left behind (err %v)", err)
	}

	c, d := mk("c", false), mk("d", false)
	if err := c.Create(); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(); err != nil {
		t.Fatal(err)
	}
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(parent); err != nil {
		t.Fatalf("a parent d did not make was removed without RemoveEmptyParents: %v", err)
	}
}
