package cgroups

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// The tests here load device filters into the kernel and attach them to a
// throw-away cgroup v2 directory below the test's own v2 cgroup. Only a
// child process the test starts moves itself into that cgroup; the test
// process stays where it is, and no other hierarchy is written.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs and create cgroups")
	}
}

func TestDeviceProgramVerifier(t *testing.T) {
	needRoot(t)
	var many []DeviceRule
	for i := range int64(300) {
		many = append(many, allow(DeviceChar, i, Wildcard, "rw"), allow(DeviceBlock, i, i, "m"))
	}
	for _, tc := range []struct {
		name  string
		rules []DeviceRule
	}{
		{"default", DefaultDevices()},
		{"empty", []DeviceRule{}},
		{"allow all", []DeviceRule{denyAll, allow(DeviceAll, Wildcard, Wildcard, "rwm")}},
		{"600 rules", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: devProgName, Type: ebpf.CGroupDevice, Instructions: deviceProgram(tc.rules)})
			if err != nil {
				t.Fatalf("the verifier refuses the filter: %v", err)
			}
			defer prog.Close()
			// Should a kernel learn BPF_PROG_TEST_RUN for device programs,
			// it could check the filters instead of devices_test.go's
			// interpreter.
			if _, err := prog.Run(&ebpf.RunOptions{Context: make([]byte, 12)}); err == nil {
				t.Log("this kernel test-runs device programs")
			} else {
				t.Logf("no test run for device programs: %v", err)
			}
		})
	}
}

// v2Host is the layout of this host's cgroup v2 hierarchy, also on a
// hybrid host where Detect hands the controllers to v1: a device filter
// works on any v2 cgroup, with or without controllers.
func v2Host(t *testing.T) Layout {
	t.Helper()
	needRoot(t)
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mi.Close()
	mounts, err := parseMountinfo(mi)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Open("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	_, own, err := ParseSelfCgroup(self)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.v2 && own != "" {
			return Layout{Mode: ModeUnified, V2: &Hierarchy{Mountpoint: m.mountpoint, Root: m.root, Own: own}}
		}
	}
	t.Skip("no cgroup2 hierarchy mounted, or no 0:: line in /proc/self/cgroup")
	return Layout{}
}

func TestDeviceFilterKernel(t *testing.T) {
	l := v2Host(t)
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	parent := "nsnet-devtest-" + hex.EncodeToString(rnd[:])
	r := Resources{Devices: []DeviceRule{allow(DeviceChar, 1, 3, "rwm"), allow(DeviceChar, 1, 5, "rwm")}}
	m, err := New(l, Config{ID: "c1", Parent: parent, Resources: r, Host: testHost()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The child has been reaped, but the kernel may drop it from the
		// cgroup a moment later.
		var err error
		for range 20 {
			if err = m.Destroy(); !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("removing the test cgroup: %v", err)
		}
	})
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	leaf := m.(*v2Manager).leaf
	if !strings.Contains(leaf, parent) {
		t.Fatalf("leaf %s is not below %s", leaf, parent)
	}

	// Create has closed every descriptor of the filter, so what stops the
	// child below is the attachment the cgroup holds, as it will once nsnet
	// has exited.
	if got := filterNames(t, leaf); strings.Join(got, " ") != devProgName {
		t.Errorf("programs on the cgroup: %q", got)
	}
	want := map[string]string{
		"open c 1:3 rw": "ok", "open c 1:5 r": "ok", "open c 1:7 r": "EPERM", "open c 10:200 rw": "EPERM",
		"mknod c 1:3": "ok", "mknod c 1:7": "EPERM", "mknod b 7:0": "EPERM",
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		delete(want, "open c 10:200 rw")
	}
	checkProbes(t, leaf, want)

	// A program the container attached itself stays when the allow-list
	// is replaced; ours is swapped.
	attachOther(t, leaf)
	before := filterIDs(t, leaf)
	r.Devices = append(r.Devices, allow(DeviceChar, 1, 7, "rwm"))
	if err := m.Set(r); err != nil {
		t.Fatal(err)
	}
	if got := filterNames(t, leaf); strings.Join(got, " ") != devProgName+" other_dev" {
		t.Errorf("programs after Set: %q", got)
	}
	if after := filterIDs(t, leaf); after[devProgName] == before[devProgName] {
		t.Errorf("Set kept the old filter %d", before[devProgName])
	}
	want["open c 1:7 r"], want["mknod c 1:7"] = "ok", "ok"
	checkProbes(t, leaf, want)

	// The default list lets mknod through for every device but opens only
	// its own; tun is not one of them.
	r.Devices = DefaultDevices()
	if err := m.Set(r); err != nil {
		t.Fatal(err)
	}
	want["mknod b 7:0"] = "ok"
	checkProbes(t, leaf, want)
}

// checkProbes starts a child that moves itself into the cgroup dir and
// reports what it may do there.
func checkProbes(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDeviceFilterChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NSNET_DEVTEST_CGROUP="+dir, "NSNET_DEVTEST_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "probe "); ok {
			k, v, _ := strings.Cut(rest, ": ")
			got[k] = v
		}
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %q, want %q", k, got[k], w)
		}
	}
	t.Logf("child in %s:\n%s", dir, out)
}

// TestDeviceFilterChild is the child of checkProbes, not a test of its own.
func TestDeviceFilterChild(t *testing.T) {
	dir, tmp := os.Getenv("NSNET_DEVTEST_CGROUP"), os.Getenv("NSNET_DEVTEST_DIR")
	if dir == "" || tmp == "" {
		t.Skip("runs only as the child process of TestDeviceFilterKernel")
	}
	if err := writeFile(dir, "cgroup.procs", fmt.Sprint(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	result := func(err error) string {
		var errno unix.Errno
		switch {
		case err == nil:
			return "ok"
		case errors.As(err, &errno):
			return unix.ErrnoName(errno)
		}
		return err.Error()
	}
	open := func(path string, flags int) error {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
	mknod := func(name string, mode uint32, major, minor uint32) error {
		return unix.Mknod(filepath.Join(tmp, name), mode|0o600, int(unix.Mkdev(major, minor)))
	}
	for _, p := range []struct {
		name string
		err  error
	}{
		{"open c 1:3 rw", open("/dev/null", unix.O_RDWR)},
		{"open c 1:5 r", open("/dev/zero", unix.O_RDONLY)},
		{"open c 1:7 r", open("/dev/full", unix.O_RDONLY)},
		{"open c 10:200 rw", open("/dev/net/tun", unix.O_RDWR)},
		{"mknod c 1:3", mknod("null", unix.S_IFCHR, 1, 3)},
		{"mknod c 1:7", mknod("full", unix.S_IFCHR, 1, 7)},
		{"mknod b 7:0", mknod("loop0", unix.S_IFBLK, 7, 0)},
	} {
		fmt.Printf("probe %s: %s\n", p.name, result(p.err))
	}
}

// attachOther attaches an allow-all device program that is not ours, as a
// container managing its own devices would.
func attachOther(t *testing.T, dir string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "other_dev", Type: ebpf.CGroupDevice,
		Instructions: asm.Instructions{asm.Mov.Imm32(asm.R0, 1), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: int(cg.Fd()), Program: prog, Attach: ebpf.AttachCGroupDevice, Flags: unix.BPF_F_ALLOW_MULTI})
	if err != nil {
		t.Fatal(err)
	}
}

// filterIDs maps the names of the device programs attached to dir to
// their ids.
func filterIDs(t *testing.T, dir string) map[string]ebpf.ProgramID {
	t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	res, err := link.QueryPrograms(link.QueryOptions{Target: int(cg.Fd()), Attach: ebpf.AttachCGroupDevice})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ebpf.ProgramID{}
	for _, ap := range res.Programs {
		p, err := ebpf.NewProgramFromID(ap.ID)
		if err != nil {
			t.Fatal(err)
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[info.Name]; dup {
			t.Errorf("two programs named %s on %s", info.Name, dir)
		}
		out[info.Name] = ap.ID
	}
	return out
}

func filterNames(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	for n := range filterIDs(t, dir) {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
