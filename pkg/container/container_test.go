package container

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestParseStartTime(t *testing.T) {
	rest := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21"
	for _, tc := range []struct {
		stat string
		want uint64
		ok   bool
	}{
		{"12 (sleep)" + rest, 424242, true},
		{"12 (a) b) (c)" + rest, 424242, true},
		{"12 (sleep) S 1 2", 0, false},
		{"garbage", 0, false},
	} {
		got, err := parseStartTime(tc.stat)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStartTime(%q) = %d, %v; want %d, ok=%v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}

func TestAliveSelf(t *testing.T) {
	start, err := startTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !alive(os.Getpid(), start) {
		t.Error("this process is not alive")
	}
	if alive(os.Getpid(), start+1) {
		t.Error("a different start time is taken for the same process")
	}
	if alive(0, 0) {
		t.Error("PID 0 is alive")
	}
}

func TestResolvConf(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"loopback only", "nameserver 127.0.0.53\noptions edns0\n", ""},
		{"mixed", "search example.org\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver ::1\nnameserver fe80::1%eth0\n",
			"search example.org\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"},
		{"none", "", ""},
	} {
		if got := string(resolvConf([]byte(tc.in))); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestHostsFile(t *testing.T) {
	got := string(hostsFile("box", []HostEntry{{Name: "db", IP: "10.0.0.5"}}))
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "127.0.1.1\tbox\n", "10.0.0.5\tdb\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts lacks %q:\n%s", want, got)
		}
	}
}

func TestParseHostEntry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want HostEntry
		ok   bool
	}{
		{"db:10.0.0.5", HostEntry{"db", "10.0.0.5"}, true},
		{"v6:fd00::1", HostEntry{"v6", "fd00::1"}, true},
		{"v6:[fd00::1]", HostEntry{"v6", "fd00::1"}, true},
		{"db", HostEntry{}, false},
		{":10.0.0.5", HostEntry{}, false},
		{"db:notanip", HostEntry{}, false},
		{"db:::ffff:10.0.0.5", HostEntry{"db", "::ffff:10.0.0.5"}, true},
		{"db:fe80::1%eth0", HostEntry{}, false},
		{"db:[10.0.0.5]", HostEntry{}, false},
		{"db:[fd00::1", HostEntry{}, false},
		{"db:fd00::1]", HostEntry{}, false},
		{"db:[[fd00::1]]", HostEntry{}, false},
		{"d b:10.0.0.5", HostEntry{}, false},
		{"db\r:10.0.0.5", HostEntry{}, false},
		{"db\u00a0x:10.0.0.5", HostEntry{}, false},
		{"db#x:10.0.0.5", HostEntry{}, false},
		{"db\x00:10.0.0.5", HostEntry{}, false},
		{"db\xff:10.0.0.5", HostEntry{}, false},
		{"dé.local:10.0.0.5", HostEntry{"dé.local", "10.0.0.5"}, true},
	} {
		got, err := ParseHostEntry(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseHostEntry(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestCheckID(t *testing.T) {
	for id, ok := range map[string]bool{
		"0123456789ab": true, "web-1": true, "a.b_c": true,
		"": false, "..": false, ".hidden": false, "a/b": false, "-x": false, strings.Repeat("a", 65): false,
		strings.Repeat("a", 64): true, "Z9-": true, "a\n": false, "a b": false, "é": false, "_x": false,
	} {
		if err := CheckID(id); (err == nil) != ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestNetNS(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""}, {"none", ""}, {"host", "host"}, {"ns:/run/netns/x", "/run/netns/x"},
	} {
		if got, cni, err := netNS(tc.in); err != nil || got != tc.want || cni {
			t.Errorf("netNS(%q) = %q, %v, %v; want %q", tc.in, got, cni, err, tc.want)
		}
	}
	for _, name := range []string{"bridge-lite", "net.1"} {
		if got, cni, err := netNS(name); err != nil || got != "" || !cni {
			t.Errorf("netNS(%q) = %q, %v, %v; want a CNI network in a new netns", name, got, cni, err)
		}
	}
	for _, bad := range []string{"ns:relative", "ns:", "a b", "-x", "a/b"} {
		if _, _, err := netNS(bad); err == nil {
			t.Errorf("netNS(%q) accepted", bad)
		}
	}
}

func TestStoreRecords(t *testing.T) {
	s := Store{Root: filepath.Join(t.TempDir(), "state")}
	a := &State{ID: "aaaa11112222", Name: "first", Status: Running, Created: time.Unix(1, 0)}
	b := &State{ID: "bbbb11112222", Name: "second", Status: Created, Created: time.Unix(2, 0)}
	for _, st := range []*State{a, b} {
		if err := s.create(st); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.create(&State{ID: "cccc", Name: "first"}); err == nil {
		t.Error("a second container named first was created")
	}
	if err := s.create(&State{ID: a.ID, Name: "third"}); err == nil {
		t.Error("a second container with the same id was created")
	}
	for ref, want := range map[string]string{"first": a.ID, "bbbb": b.ID, a.ID: a.ID} {
		st, err := s.Load(ref)
		if err != nil || st.ID != want {
			t.Errorf("Load(%q) = %v, %v; want %s", ref, st, err, want)
			continue
		}
		// Neither recorded PID nor monitor runs: both have stopped.
		if st.Status != Stopped {
			t.Errorf("Load(%q).Status = %s, want stopped", ref, st.Status)
		}
	}
	if _, err := s.Load("zzzz"); err == nil {
		t.Error("Load of an unknown container succeeded")
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].ID != a.ID {
		t.Fatalf("List = %v, %v", list, err)
	}
	entries, _ := os.ReadDir(s.Dir(a.ID))
	if len(entries) != 1 || entries[0].Name() != stateFile {
		t.Errorf("state dir holds %v, want only %s (no temporary files)", entries, stateFile)
	}
	if err := s.remove(a.ID, a.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(a.ID); err == nil {
		t.Error("removed container still loads")
	}
	if _, err := s.Load("first"); err == nil {
		t.Error("the name of a removed container still loads")
	}
	// The name is free again; so is one whose link a crashed nsnet left.
	c := &State{ID: "cccc11112222", Name: "first"}
	if err := s.create(c); err != nil {
		t.Fatalf("reusing a removed container's name: %v", err)
	}
	if err := os.RemoveAll(s.Dir(c.ID)); err != nil {
		t.Fatal(err)
	}
	d := &State{ID: "dddd11112222", Name: "first"}
	if err := s.create(d); err != nil {
		t.Fatalf("taking over a stale name: %v", err)
	}
	if st, err := s.Load("first"); err != nil || st.ID != d.ID {
		t.Errorf("Load(first) = %v, %v; want %s", st, err, d.ID)
	}
	// Ids and names must not shadow each other.
	if err := s.create(&State{ID: "eeee11112222", Name: b.ID}); err == nil {
		t.Error("a container was named after another's id")
	}
	if err := s.create(&State{ID: "first", Name: "first"}); err == nil {
		t.Error("a container got another's name as its id")
	}
	for _, st := range []*State{b, d} {
		if err := s.remove(st.ID, st.Name); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(s.Root); len(entries) != 0 {
		t.Errorf("state root holds %v after every container was removed", entries)
	}
}

func TestCheckPidsRoom(t *testing.T) {
	for _, c := range []struct {
		limit int64
		init  bool
		ok    bool
	}{
		{0, true, true},
		{-1, true, true},
		{initTasks, true, false},
		{initTasks + 1, true, true},
		{1, false, true},
		{3, true, false},
	} {
		if err := checkPidsRoom(c.limit, c.init); (err == nil) != c.ok {
			t.Errorf("checkPidsRoom(%d, init %v) = %v, want ok %v", c.limit, c.init, err, c.ok)
		}
	}
}

func FuzzParseHostEntry(f *testing.F) {
	for _, s := range []string{"db:10.0.0.5", "v6:fd00::1", "v6:[fd00::1]", "db", ":10.0.0.5", "db:notanip",
		"db:::ffff:10.0.0.5", "a.b-c_d:127.0.0.1", "db:fe80::1%eth0", "db:[10.0.0.5]", "db:[[fd00::1]]",
		"db:fd00::1]", "d b:10.0.0.5", "db\r:10.0.0.5", "db#x:10.0.0.5", "db\x00:10.0.0.5", "dé:10.0.0.5", "db:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseHostEntry(s)
		if err != nil {
			return
		}
		name, ipText, _ := strings.Cut(s, ":")
		if e.Name != name || !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
			t.Fatalf("ParseHostEntry(%q) name %q is not a valid name", s, e.Name)
		}
		addr, err := netip.ParseAddr(e.IP)
		if err != nil || addr.Zone() != "" || addr.String() != e.IP {
			t.Fatalf("ParseHostEntry(%q) IP %q is not a plain canonical address", s, e.IP)
		}
		// Brackets may only enclose an IPv6 address.
		if inner, ok := strings.CutPrefix(ipText, "["); ok {
			inner, ok = strings.CutSuffix(inner, "]")
			if a, err := netip.ParseAddr(inner); !ok || err != nil || a != addr || !addr.Is6() {
				t.Fatalf("ParseHostEntry(%q) accepted IP text %q", s, ipText)
			}
		} else if a, err := netip.ParseAddr(ipText); err != nil || a != addr {
			t.Fatalf("ParseHostEntry(%q) accepted IP text %q", s, ipText)
		}
		// The entry's line must read back as it was meant: the address
		// and the one name, as a resolver splits /etc/hosts.
		lines := strings.Split(strings.TrimSuffix(string(hostsFile("", []HostEntry{e})), "\n"), "\n")
		line, _, _ := strings.Cut(lines[len(lines)-1], "#")
		fields := strings.FieldsFunc(line, func(r rune) bool { return strings.ContainsRune(" \t\n\v\f\r", r) })
		if len(fields) != 2 || fields[0] != e.IP || fields[1] != e.Name {
			t.Fatalf("ParseHostEntry(%q) = %+v, whose hosts line %q reads as %q", s, e, lines[len(lines)-1], fields)
		}
		if back, err := ParseHostEntry(e.Name + ":" + e.IP); err != nil || back != e {
			t.Fatalf("ParseHostEntry(%q) = %+v, but %q parses to %+v, %v", s, e, e.Name+":"+e.IP, back, err)
		}
	})
}
