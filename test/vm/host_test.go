package vm

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFindKernel(t *testing.T) {
	boot, mods := t.TempDir(), t.TempDir()
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-100-amd64", "6.12.0-1-amd64"} {
		if err := os.WriteFile(filepath.Join(boot, "vmlinuz-"+v), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 6.12 has no modules installed, so it cannot be used.
	for _, v := range []string{"6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-100-amd64"} {
		if err := os.MkdirAll(filepath.Join(mods, v), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mods, v, "modules.dep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k, err := FindKernel(boot, mods)
	if err != nil {
		t.Fatal(err)
	}
	want := Kernel{Version: "6.1.0-100-amd64", Vmlinuz: filepath.Join(boot, "vmlinuz-6.1.0-100-amd64"), ModulesDir: filepath.Join(mods, "6.1.0-100-amd64")}
	if k != want {
		t.Fatalf("FindKernel = %+v, want %+v", k, want)
	}
	if _, err := FindKernel(t.TempDir(), mods); err == nil {
		t.Fatal("FindKernel found a kernel in an empty /boot")
	}
}

func TestCompareVersions(t *testing.T) {
	ordered := []string{"5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-100-amd64", "6.12.0-1-amd64"}
	shuffled := []string{ordered[3], ordered[0], ordered[4], ordered[2], ordered[1]}
	slices.SortFunc(shuffled, compareVersions)
	if !reflect.DeepEqual(shuffled, ordered) {
		t.Fatalf("sorted %v, want %v", shuffled, ordered)
	}
}

// note builds one ELF note record.
func note(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	n := append([]byte(name), 0)
	for _, v := range []uint32{uint32(len(n)), uint32(len(desc)), typ} {
		_ = binary.Write(&b, binary.LittleEndian, v)
	}
	b.Write(n)
	b.Write(make([]byte, (4-len(n)%4)%4))
	b.Write(desc)
	b.Write(make([]byte, (4-len(desc)%4)%4))
	return b.Bytes()
}

func TestHasXenPVHNote(t *testing.T) {
	gnu := note("GNU", 3, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	for _, tc := range []struct {
		name  string
		notes []byte
		want  bool
	}{
		{"pvh after other notes", append(append(gnu, note("Xen", 6, []byte("linux"))...), note("Xen", 18, []byte{0, 0, 0, 1})...), true},
		{"other Xen notes only", append(gnu, note("Xen", 6, []byte("linux"))...), false},
		{"truncated", note("Xen", 18, []byte{0, 0, 0, 1})[:14], false},
		{"empty", nil, false},
	} {
		if got := hasXenPVHNote(tc.notes, binary.LittleEndian); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMirrorFromIndexTargets(t *testing.T) {
	out := "http://mirror.example/debian-security/ bookworm-security main Packages\n" +
		"http://mirror.example/debian/ bookworm main DEP-11\n" +
		"http://mirror.example/debian/ bookworm main Packages\n"
	if got, err := mirrorFromIndexTargets(out, "bookworm"); err != nil || got != "http://mirror.example/debian/" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := mirrorFromIndexTargets(out, "trixie"); err == nil {
		t.Fatal("found a mirror for a suite apt does not know")
	}
}

func TestAccel(t *testing.T) {
	for _, tc := range []struct{ cpuinfo, want string }{
		{"processor\t: 0\nflags\t\t: fpu vme sse4_2 vmx ept\n", "kvm"},
		{"flags\t\t: fpu svm npt\n", "kvm"},
		{"flags\t\t: fpu vme sse4_2 avx2\nvmx flags\t: none\n", "tcg"},
		{"", "tcg"},
	} {
		if got := Accel([]byte(tc.cpuinfo)); got != tc.want {
			t.Errorf("Accel(%q) = %s, want %s", tc.cpuinfo, got, tc.want)
		}
	}
}

func TestMachineArgs(t *testing.T) {
	m := Machine{
		Kernel: "/c/vmlinux", Initrd: "/t/i.cpio", Cmdline: "console=ttyS0 quiet",
		Disks:     []Disk{{Path: "/c/root.ext4", Serial: "nsnet-root", Snapshot: true}, {Path: "/t/s.img"}},
		MemoryMiB: 1024, CPUs: 2, Accel: "tcg", ConsoleLog: "/t/console.log",
	}
	got := strings.Join(m.Args(), " ")
	for _, want := range []string{
		"-accel tcg -cpu max -m 1024 -smp 2", "-nic none", "-no-reboot", "-monitor none",
		"-kernel /c/vmlinux -initrd /t/i.cpio -append console=ttyS0 quiet",
		"-serial file:/t/console.log -serial stdio",
		"-drive file=/c/root.ext4,if=none,id=disk0,format=raw,snapshot=on -device virtio-blk-pci,drive=disk0,serial=nsnet-root",
		"-drive file=/t/s.img,if=none,id=disk1,format=raw -device virtio-blk-pci,drive=disk1",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("qemu args lack %q:\n%s", want, got)
		}
	}
}

func TestStream(t *testing.T) {
	guest := InfoLine("kernel 6.1") +
		StartLine("./a") + "=== RUN   TestX\r\n--- PASS: TestX (0.00s)\r\nPASS\r\n" + EndLine("./a", 0, 1500*time.Millisecond) +
		StartLine("./b") + "--- FAIL: TestY (0.10s)\nFAIL\n" + EndLine("./b", 1, 2*time.Second) +
		StartLine("./c") + "panic: test timed out\n" + EndLine("./c", -1, 3*time.Second) +
		StartLine("./d") + "=== RUN   TestZ\n"
	var out bytes.Buffer
	rep, err := Stream(strings.NewReader(guest), &out)
	if err != nil {
		t.Fatal(err)
	}
	wantOut := "vmtest: guest kernel 6.1\n" +
		"=== RUN   TestX\n--- PASS: TestX (0.00s)\nPASS\nok  \t./a\t1.500s\n" +
		"--- FAIL: TestY (0.10s)\nFAIL\nFAIL\t./b\t2.000s\n" +
		"panic: test timed out\nFAIL\t./c\t3.000s (killed by the guest runner's timeout)\n" +
		"=== RUN   TestZ\n"
	if out.String() != wantOut {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), wantOut)
	}
	plan := Plan{Packages: []PlanPackage{{Name: "./a"}, {Name: "./b"}, {Name: "./c"}, {Name: "./d"}, {Name: "./e"}}}
	want := []string{
		"./b failed (exit code 1)",
		"./c failed (exit code -1)",
		"./d did not finish: the VM stopped while it ran",
		"./e never ran",
		"the guest runner did not report completion",
	}
	if got := rep.Failures(plan); !reflect.DeepEqual(got, want) {
		t.Errorf("failures %q\nwant %q", got, want)
	}

	rep, err = Stream(strings.NewReader(StartLine("./a")+EndLine("./a", 0, time.Second)+DoneLine()), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Failures(Plan{Packages: []PlanPackage{{Name: "./a"}}}); len(got) != 0 {
		t.Errorf("a complete, passing run reported %q", got)
	}
}
