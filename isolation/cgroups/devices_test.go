package cgroups

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func allow(t DeviceType, major, minor int64, access string) DeviceRule {
	return DeviceRule{Allow: true, Type: t, Major: major, Minor: minor, Access: access}
}

var denyAll = DeviceRule{Type: DeviceAll, Major: Wildcard, Minor: Wildcard, Access: "rwm"}

func TestParseDeviceRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want DeviceRule
		err  string // substring; empty = valid
	}{
		{in: "c 1:3 rwm", want: allow(DeviceChar, 1, 3, "rwm")},
		{in: "b *:* m", want: allow(DeviceBlock, Wildcard, Wildcard, "m")},
		{in: "c 136:* rw", want: allow(DeviceChar, 136, Wildcard, "rw")},
		{in: "c *:5 r", want: allow(DeviceChar, Wildcard, 5, "r")},
		{in: "a *:* rwm", want: allow(DeviceAll, Wildcard, Wildcard, "rwm")},
		{in: "c 10:200 mwr", want: allow(DeviceChar, 10, 200, "rwm")},
		{in: "  c\t4095:1048575  w ", want: allow(DeviceChar, 4095, 1048575, "w")},
		{in: "c 007:0 r", want: allow(DeviceChar, 7, 0, "r")},
		{in: "", err: "want TYPE MAJOR:MINOR ACCESS"},
		{in: "c 1:3", err: "want TYPE"},
		{in: "c 1:3 rwm x", err: "want TYPE"},
		{in: "x 1:3 rwm", err: "not a, b or c"},
		{in: "cc 1:3 rwm", err: "not a, b or c"},
		{in: "c 1-3 rwm", err: "not MAJOR:MINOR"},
		{in: "c a:3 r", err: "major"},
		{in: "c 1: r", err: "minor"},
		{in: "c :1 r", err: "major"},
		{in: "c -1:3 r", err: "major"},
		{in: "c +1:3 r", err: "major"},
		{in: "c 1:3:4 r", err: "minor"},
		{in: "c 99999999999:1 r", err: "out of range"},
		{in: "c 4096:0 r", err: "major 4096 is outside 0..4095"},
		{in: "c 1:1048576 r", err: "minor 1048576 is outside"},
		{in: "c 1:3 rwx", err: "access"},
		{in: "c 1:3 rr", err: "access"},
		{in: "c 1:3 rwmr", err: "access"},
		{in: "c 1:3 -", err: "access"},
		{in: "a 1:3 rwm", err: "type a covers every device"},
		{in: "a *:* r", err: "type a covers every device"},
	} {
		got, err := ParseDeviceRule(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("ParseDeviceRule(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDeviceRule(%q) = %+v, %v; want ErrInvalid containing %q", tc.in, got, err, tc.err)
		}
	}
}

func FuzzParseDeviceRule(f *testing.F) {
	for _, s := range []string{"c 1:3 rwm", "b *:* m", "c 136:* rw", "a *:* rwm", "c 1:3", "c 4096:0 r", "c 1:3 rr"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseDeviceRule(s)
		if err != nil {
			return
		}
		if err := validateDevices([]DeviceRule{r}); err != nil {
			t.Fatalf("ParseDeviceRule(%q) = %+v, which does not validate: %v", s, r, err)
		}
		back, err := ParseDeviceRule(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %q through %q: %+v, %v", s, r.String(), back, err)
		}
		// The compiled filter agrees with the rule on requests at and next
		// to its numbers.
		prog := compile(t, []DeviceRule{denyAll, r})
		for _, q := range probes(r) {
			if got, want := prog.run(t, q), covers(r, q); got != want {
				t.Fatalf("rule %q, request %v: filter says %v, want %v", r, q, got, want)
			}
		}
	})
}

func TestDefaultDevices(t *testing.T) {
	var got []string
	for _, d := range DefaultDevices() {
		s := d.String()
		if !d.Allow {
			s = "deny " + s
		}
		got = append(got, s)
	}
	want := []string{"deny a *:* rwm", "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
		"c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("DefaultDevices =\n%q\nwant\n%q", got, want)
	}
	if err := validateDevices(DefaultDevices()); err != nil {
		t.Error(err)
	}
}

func TestValidateDevices(t *testing.T) {
	h := testHost()
	for _, tc := range []struct {
		name string
		d    []DeviceRule
		want string
	}{
		{"nil", nil, ""},
		{"empty denies all", []DeviceRule{}, ""},
		{"default", DefaultDevices(), ""},
		{"allow all", []DeviceRule{allow(DeviceAll, Wildcard, Wildcard, "rwm")}, ""},
		{"deny-all later", append(DefaultDevices(), denyAll, allow(DeviceChar, 1, 3, "rw")), ""},
		{"deny one device", append(DefaultDevices(), DeviceRule{Type: DeviceChar, Major: 1, Minor: 7, Access: "rwm"}), "only 'a *:* rwm' can be denied"},
		{"bad type", []DeviceRule{allow('x', 1, 3, "r")}, "not a, b or c"},
		{"no access", []DeviceRule{allow(DeviceChar, 1, 3, "")}, "access"},
		{"negative major", []DeviceRule{allow(DeviceChar, -2, 3, "r")}, "major -2"},
		{"huge minor", []DeviceRule{allow(DeviceChar, 1, 1<<20, "r")}, "minor 1048576"},
		{"narrow a", []DeviceRule{allow(DeviceAll, 1, Wildcard, "rwm")}, "type a covers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkValidate(t, Resources{Devices: tc.d}.Validate(h), tc.want)
		})
	}
}

func TestEffectiveDevices(t *testing.T) {
	allowAll := allow(DeviceAll, Wildcard, Wildcard, "rwm")
	for _, tc := range []struct {
		name string
		in   []DeviceRule
		want []DeviceRule
	}{
		{"empty", []DeviceRule{}, nil},
		{"only deny-all", []DeviceRule{denyAll}, nil},
		{"default", DefaultDevices(), DefaultDevices()[1:]},
		{"rules before a deny-all are dropped",
			[]DeviceRule{allow(DeviceChar, 1, 3, "r"), denyAll, allow(DeviceChar, 1, 5, "r")},
			[]DeviceRule{allow(DeviceChar, 1, 5, "r")}},
		{"same numbers merge",
			[]DeviceRule{allow(DeviceChar, 1, 3, "m"), allow(DeviceBlock, 1, 3, "w"), allow(DeviceChar, 1, 3, "r")},
			[]DeviceRule{allow(DeviceChar, 1, 3, "rm"), allow(DeviceBlock, 1, 3, "w")}},
		{"other numbers do not", []DeviceRule{allow(DeviceChar, 1, Wildcard, "r"), allow(DeviceChar, 1, 3, "w")},
			[]DeviceRule{allow(DeviceChar, 1, Wildcard, "r"), allow(DeviceChar, 1, 3, "w")}},
		{"allow-all wins", []DeviceRule{denyAll, allow(DeviceChar, 1, 3, "r"), allowAll, allow(DeviceChar, 1, 5, "r")}, []DeviceRule{allowAll}},
		{"deny-all after allow-all", []DeviceRule{allowAll, denyAll}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := effectiveDevices(tc.in)
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			}
		})
	}
}

// request is what the kernel asks a device filter.
type request struct {
	typ          DeviceType // b or c
	major, minor uint32
	access       string
}

func (q request) String() string {
	return fmt.Sprintf("%c %d:%d %s", q.typ, q.major, q.minor, q.access)
}

// covers is the specification the filter must meet: a rule allows a request
// when its type and numbers match and its access includes all requested.
func covers(r DeviceRule, q request) bool {
	if r.Type != DeviceAll {
		if r.Type != q.typ ||
			(r.Major != Wildcard && uint32(r.Major) != q.major) ||
			(r.Minor != Wildcard && uint32(r.Minor) != q.minor) {
			return false
		}
	}
	for _, c := range q.access {
		if !strings.ContainsRune(r.Access, c) {
			return false
		}
	}
	return true
}

// probes are requests at a rule's numbers, next to them, and of both types
// with each single access and all three.
func probes(r DeviceRule) []request {
	nums := func(n int64) []uint32 {
		if n == Wildcard {
			return []uint32{0, 7}
		}
		return []uint32{uint32(n), uint32(n) + 1}
	}
	var out []request
	for _, typ := range []DeviceType{DeviceBlock, DeviceChar} {
		for _, maj := range nums(r.Major) {
			for _, min := range nums(r.Minor) {
				for _, acc := range []string{"r", "w", "m", "rw", "rwm"} {
					out = append(out, request{typ, maj, min, acc})
				}
			}
		}
	}
	return out
}

// program is a compiled filter in the kernel's byte format, little-endian
// like the machines nsnet runs on.
type program []byte

func compile(t testing.TB, rules []DeviceRule) program {
	t.Helper()
	var buf bytes.Buffer
	if err := deviceProgram(rules).Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatalf("marshalling the filter for %v: %v", rules, err)
	}
	return buf.Bytes()
}

// run interprets the filter for one request: the kernel cannot test-run
// BPF_PROG_TYPE_CGROUP_DEVICE programs, so this covers the instructions
// deviceProgram emits, and fails on any other.
func (p program) run(t testing.TB, q request) bool {
	t.Helper()
	var ctx [12]byte
	typ := uint32(devcgChar)
	if q.typ == DeviceBlock {
		typ = devcgBlock
	}
	binary.LittleEndian.PutUint32(ctx[0:], typ|uint32(accessBits(q.access))<<16)
	binary.LittleEndian.PutUint32(ctx[4:], q.major)
	binary.LittleEndian.PutUint32(ctx[8:], q.minor)
	var reg [11]uint64
	const ctxReg = 1
	for pc, steps := 0, 0; ; pc, steps = pc+1, steps+1 {
		if pc < 0 || 8*pc+8 > len(p) || steps > len(p) {
			t.Fatalf("filter ran off its end at %d", pc)
		}
		ins := p[8*pc : 8*pc+8]
		op, dst, src := ins[0], ins[1]&0xf, ins[1]>>4
		off := int16(binary.LittleEndian.Uint16(ins[2:]))
		imm := int32(binary.LittleEndian.Uint32(ins[4:]))
		sext := uint64(int64(imm))
		switch op {
		case 0x61: // ldxw dst, [src+off]
			if src != ctxReg || off < 0 || int(off)+4 > len(ctx) || off%4 != 0 {
				t.Fatalf("insn %d: load from r%d%+d outside the context", pc, src, off)
			}
			reg[dst] = uint64(binary.LittleEndian.Uint32(ctx[off:]))
		case 0xbc: // mov32 dst, src
			reg[dst] = uint64(uint32(reg[src]))
		case 0xb4: // mov32 dst, imm
			reg[dst] = uint64(uint32(imm))
		case 0x54: // and32 dst, imm
			reg[dst] = uint64(uint32(reg[dst]) & uint32(imm))
		case 0x74: // rsh32 dst, imm
			reg[dst] = uint64(uint32(reg[dst]) >> uint32(imm))
		case 0x55: // jne dst, imm, +off
			if reg[dst] != sext {
				pc += int(off)
			}
		case 0x45: // jset dst, imm, +off
			if reg[dst]&sext != 0 {
				pc += int(off)
			}
		case 0x95: // exit
			if reg[0] > 1 {
				t.Fatalf("filter returned %d", reg[0])
			}
			return reg[0] == 1
		default:
			t.Fatalf("insn %d: opcode %#x not expected in a device filter", pc, op)
		}
	}
}

func TestDeviceProgram(t *testing.T) {
	c := func(major, minor uint32, access string) request { return request{DeviceChar, major, minor, access} }
	b := func(major, minor uint32, access string) request { return request{DeviceBlock, major, minor, access} }
	for _, tc := range []struct {
		name  string
		rules []DeviceRule
		yes   []request
		no    []request
	}{
		{"default", DefaultDevices(),
			[]request{c(1, 3, "rw"), c(1, 5, "r"), c(1, 7, "w"), c(1, 8, "r"), c(1, 9, "rw"), c(5, 0, "rw"), c(5, 1, "rw"), c(5, 2, "rw"),
				c(136, 0, "rw"), c(136, 4711, "rwm"), c(10, 200, "m"), b(8, 0, "m"), c(4095, 1048575, "m")},
			[]request{c(10, 200, "rw"), c(10, 200, "r"), b(1, 3, "r"), b(8, 0, "r"), b(8, 0, "rw"), c(1, 4, "r"), c(1, 1, "w"), c(5, 3, "r"),
				c(137, 0, "r"), c(4, 0, "rw"), c(0, 3, "r")}},
		{"empty", []DeviceRule{}, nil, []request{c(1, 3, "r"), b(8, 0, "m")}},
		{"allow all", []DeviceRule{denyAll, allow(DeviceAll, Wildcard, Wildcard, "rwm")}, []request{c(1, 3, "rwm"), b(8, 0, "rw"), c(10, 200, "r")}, nil},
		{"partial access", []DeviceRule{allow(DeviceBlock, 8, Wildcard, "r")},
			[]request{b(8, 0, "r"), b(8, 16, "r")}, []request{b(8, 0, "w"), b(8, 0, "rw"), b(8, 0, "m"), c(8, 0, "r"), b(9, 0, "r")}},
		{"merged access", []DeviceRule{allow(DeviceChar, 1, 3, "r"), allow(DeviceChar, 1, 3, "w")}, []request{c(1, 3, "rw")}, []request{c(1, 3, "m")}},
		{"wildcard major", []DeviceRule{allow(DeviceChar, Wildcard, 3, "rwm")}, []request{c(0, 3, "r"), c(4095, 3, "rw")}, []request{c(1, 4, "r"), b(1, 3, "r")}},
		{"major and minor zero", []DeviceRule{allow(DeviceChar, 0, 0, "r")}, []request{c(0, 0, "r")}, []request{c(0, 1, "r"), c(1, 0, "r")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := compile(t, tc.rules)
			for _, q := range tc.yes {
				if !p.run(t, q) {
					t.Errorf("%v denied", q)
				}
			}
			for _, q := range tc.no {
				if p.run(t, q) {
					t.Errorf("%v allowed", q)
				}
			}
			// And every probe of every rule agrees with the specification.
			eff := effectiveDevices(tc.rules)
			for _, r := range eff {
				for _, q := range probes(r) {
					want := false
					for _, r2 := range eff {
						want = want || covers(r2, q)
					}
					if got := p.run(t, q); got != want {
						t.Errorf("%v: filter says %v, want %v", q, got, want)
					}
				}
			}
		})
	}
}

// devFiles are a v1 devices cgroup's files; devices.list is what a new
// cgroup copies from an unrestricted parent.
func devFiles() map[string]string {
	files := map[string]string{"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"}
	for k, v := range v1Files {
		files[k] = v
	}
	return files
}

func TestV1Devices(t *testing.T) {
	l, prefix := fakeV1(t)
	r := Resources{Memory: 64 << 20, Devices: append(DefaultDevices(), allow(DeviceChar, 10, 200, "rwm"))}
	m, err := New(l, Config{ID: "c1", Resources: r, Host: testHost(), Prefix: prefix, Dirs: fakeDirs{devFiles()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	leaf := v1Leaf(prefix, "devices")
	if got := readT(t, filepath.Join(leaf, "devices.deny")); got != "a\n" {
		t.Errorf("devices.deny = %q", got)
	}
	want := "c *:* m\nb *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\nc 5:0 rwm\nc 5:1 rwm\nc 5:2 rwm\nc 136:* rwm\nc 10:200 rwm\n"
	if got := readT(t, filepath.Join(leaf, "devices.allow")); got != want {
		t.Errorf("devices.allow =\n%s\nwant\n%s", got, want)
	}
	if err := m.Apply(4242); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "cgroup.procs")); got != "4242" {
		t.Errorf("devices cgroup.procs = %q", got)
	}

	// An update writes the whole list again, starting from deny-all.
	writeT(t, filepath.Join(leaf, "devices.deny"), "")
	writeT(t, filepath.Join(leaf, "devices.allow"), "")
	if err := m.Set(Resources{Devices: []DeviceRule{allow(DeviceChar, 1, 3, "r"), allow(DeviceChar, 1, 3, "w")}}); err != nil {
		t.Fatal(err)
	}
	if got := readT(t, filepath.Join(leaf, "devices.deny")) + readT(t, filepath.Join(leaf, "devices.allow")); got != "a\nc 1:3 rw\n" {
		t.Errorf("after Set: %q", got)
	}
	// An invalid list writes nothing.
	if err := m.Set(Resources{Devices: []DeviceRule{{Type: DeviceChar, Major: 1, Minor: 3, Access: "w"}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Set(deny c 1:3 w) = %v", err)
	}
	if got := readT(t, filepath.Join(leaf, "devices.deny")); got != "a\n" {
		t.Errorf("devices.deny after a refused Set = %q", got)
	}

	// nsnet rm does not know the resources and still removes it all.
	m2, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: prefix, Dirs: fakeDirs{devFiles()}, Created: m.Created()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(leaf)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("devices parent left behind (%v)\n%s", err, dump(t, prefix))
	}
}

func TestV1NoDevices(t *testing.T) {
	l, prefix := fakeV1(t)
	m, err := New(l, Config{ID: "c1", Resources: Resources{PidsLimit: 5}, Host: testHost(), Prefix: prefix, Dirs: fakeDirs{devFiles()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(7); err != nil {
		t.Fatal(err)
	}
	devRoot := filepath.Join(prefix, "/sys/fs/cgroup/devices/nsnet")
	if _, err := os.Stat(devRoot); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("devices hierarchy touched without an allow-list: %v", err)
	}
	if err := m.Set(Resources{Devices: DefaultDevices()}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "created without") {
		t.Errorf("Set(devices) on a container without = %v", err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
}

func TestV1DevicesNotMounted(t *testing.T) {
	var mi []string
	for _, line := range strings.Split(hybridMountinfo, "\n") {
		if !strings.Contains(line, "/devices ") {
			mi = append(mi, line)
		}
	}
	l := mustDetect(t, strings.Join(mi, "\n"), hybridSelf)
	if _, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: t.TempDir(), Resources: Resources{Devices: DefaultDevices()}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("New without a devices hierarchy = %v", err)
	}
	if _, err := New(l, Config{ID: "c1", Host: testHost(), Prefix: t.TempDir()}); err != nil {
		t.Errorf("New without devices and without an allow-list = %v", err)
	}
}

func TestV2Devices(t *testing.T) {
	type call struct {
		dir   string
		rules []DeviceRule
	}
	var calls []call
	record := func(dir string, rules []DeviceRule) error {
		// The filter goes on the leaf after it exists.
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
			t.Errorf("filter attached to %s before it was made: %v", dir, err)
		}
		calls = append(calls, call{dir, rules})
		return nil
	}
	for _, tc := range []struct {
		name  string
		r     Resources
		calls int
	}{
		{"default", Resources{Devices: DefaultDevices()}, 1},
		{"with limits", Resources{PidsLimit: 3, Devices: []DeviceRule{}}, 1},
		{"none", Resources{PidsLimit: 3}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls = nil
			m, _, _, own := newV2Test(t, allControllers, tc.r)
			m.(*v2Manager).attachDevices = record
			if err := m.Create(); err != nil {
				t.Fatal(err)
			}
			if len(calls) != tc.calls {
				t.Fatalf("attached %d times, want %d", len(calls), tc.calls)
			}
			if tc.calls == 0 {
				return
			}
			if leaf := filepath.Join(own, "nsnet/c1"); calls[0].dir != leaf || len(calls[0].rules) != len(tc.r.Devices) {
				t.Errorf("attached %+v, want %d rules on %s", calls[0], len(tc.r.Devices), leaf)
			}
			if err := m.Set(Resources{Devices: []DeviceRule{allow(DeviceChar, 1, 3, "rw")}}); err != nil {
				t.Fatal(err)
			}
			if err := m.Set(Resources{CPUs: 1}); err != nil {
				t.Fatal(err)
			}
			if len(calls) != 2 || len(calls[1].rules) != 1 {
				t.Errorf("after Set: %+v", calls)
			}
		})
	}
}

func TestV2DevicesAttachFailureRollsBack(t *testing.T) {
	m, _, _, own := newV2Test(t, allControllers, Resources{Devices: DefaultDevices()})
	m.(*v2Manager).attachDevices = func(string, []DeviceRule) error { return errors.New("no BPF here") }
	if err := m.Create(); err == nil || !strings.Contains(err.Error(), "no BPF here") {
		t.Fatalf("Create = %v", err)
	}
	if _, err := os.Stat(filepath.Join(own, "nsnet")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed Create left directories:\n%s", dump(t, own))
	}
}
