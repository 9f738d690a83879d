package netnsconf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestNameFromPath(t *testing.T) {
	tests := []struct {
		path string
		name string
		ok   bool
	}{
		{"/run/netns/ns1", "ns1", true},
		{"/var/run/netns/ns1", "ns1", true},
		{"/run/netns//ns1/", "ns1", true},
		{"/run/netns/./ns1", "ns1", true},
		{"/run/netns/a/../ns1", "ns1", true},
		{"/run/netns/sub/ns1", "", false},
		{"/run/netns", "", false},
		{"/run/netns/", "", false},
		{"/run/netns/..", "", false},
		{"/run/netns/../etc", "", false},
		{"run/netns/ns1", "", false},
		{"/proc/123/ns/net", "", false},
		{"/proc/self/task/5/ns/net", "", false},
		{"/var/run/netns2/ns1", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			name, ok := NameFromPath(tt.path)
			if name != tt.name || ok != tt.ok {
				t.Errorf("NameFromPath(%q) = %q, %v; want %q, %v", tt.path, name, ok, tt.name, tt.ok)
			}
		})
	}
}

func TestNamedNetNSRefusesPlainFiles(t *testing.T) {
	if _, ok, err := NamedNetNS("/proc/self/ns/net"); ok || err != nil {
		t.Errorf("unnamed path: ok=%v err=%v, want false, nil", ok, err)
	}
	if _, ok, err := NamedNetNS("/run/netns/nsnt-does-not-exist-" + t.Name()); ok || err == nil {
		t.Errorf("missing file: ok=%v err=%v, want false and an error", ok, err)
	}
}

func TestParseResolvConf(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want types.DNS
	}{
		{
			name: "systemd-resolved stub is dropped",
			in:   "# managed\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
			want: types.DNS{Options: []string{"edns0", "trust-ad"}, Search: []string{"lan"}},
		},
		{
			name: "loopback and unspecified of both families are dropped",
			in:   "nameserver 127.1.2.3\nnameserver ::1\nnameserver ::ffff:127.0.0.1\nnameserver 0.0.0.0\nnameserver 10.0.0.2\nnameserver fd00::53\n",
			want: types.DNS{Nameservers: []string{"10.0.0.2", "fd00::53"}},
		},
		{
			name: "comments, blank lines, indented and bare keywords are ignored",
			in:   "\n; semi\n#nameserver 1.1.1.1\n  nameserver 9.9.9.9\nnameserver\nnameserver 8.8.8.8 # trailing\n",
			want: types.DNS{Nameservers: []string{"8.8.8.8"}},
		},
		{
			name: "not an address",
			in:   "nameserver dns.example\nnameserver 1.1.1.1\n",
			want: types.DNS{Nameservers: []string{"1.1.1.1"}},
		},
		{
			name: "last search wins, options accumulate, tabs separate",
			in:   "search a b\nsearch\tc d\noptions ndots:2\noptions rotate\ndomain example.test\n",
			want: types.DNS{Search: []string{"c", "d"}, Options: []string{"ndots:2", "rotate"}, Domain: "example.test"},
		},
		{
			name: "CRLF line ends",
			in:   "nameserver 10.1.1.1\r\nsearch x\r\n",
			want: types.DNS{Nameservers: []string{"10.1.1.1"}, Search: []string{"x"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseResolvConf(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

var owner = Owner{Plugin: "bridge-lite", ContainerID: "c1", IfName: "eth0"}

func TestRenderResolvConf(t *testing.T) {
	tests := []struct {
		name    string
		dns     types.DNS
		want    string
		wantErr string
	}{
		{
			name: "every key, domain before search",
			dns:  types.DNS{Nameservers: []string{"10.0.0.1", "fd00::1"}, Domain: "d.test", Search: []string{"a.test", "b.test"}, Options: []string{"ndots:2"}},
			want: owner.marker() + "\nnameserver 10.0.0.1\nnameserver fd00::1\ndomain d.test\nsearch a.test b.test\noptions ndots:2\n",
		},
		{name: "nameservers only", dns: types.DNS{Nameservers: []string{"8.8.8.8"}}, want: owner.marker() + "\nnameserver 8.8.8.8\n"},
		{name: "hostname as nameserver", dns: types.DNS{Nameservers: []string{"dns.example"}}, wantErr: "not an IP address"},
		{name: "newline in search", dns: types.DNS{Search: []string{"a\nnameserver 6.6.6.6"}}, wantErr: "cannot be written"},
		{name: "space in domain", dns: types.DNS{Domain: "a b"}, wantErr: "cannot be written"},
		{name: "comment as option", dns: types.DNS{Options: []string{"#x"}}, wantErr: "cannot be written"},
		{name: "empty search entry", dns: types.DNS{Search: []string{""}}, wantErr: "cannot be written"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderResolvConf(owner, tt.dns)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			back, err := ParseResolvConf(strings.NewReader(string(got)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.dns) {
				t.Errorf("parsed back %+v, want %+v", back, tt.dns)
			}
		})
	}
}

func TestMarkerIsOneLine(t *testing.T) {
	m := Owner{Plugin: "p", ContainerID: "a\nnameserver 1.2.3.4", IfName: "e\r0"}.marker()
	if strings.ContainsAny(m, "\r\n") {
		t.Fatalf("marker spans lines: %q", m)
	}
}

func TestHostDNS(t *testing.T) {
	dir := t.TempDir()
	if dns, err := HostDNS(filepath.Join(dir, "missing")); err != nil || !dns.IsEmpty() {
		t.Errorf("missing file: %+v, %v; want empty, nil", dns, err)
	}
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte("nameserver 127.0.0.53\nnameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dns, err := HostDNS(p)
	if err != nil || !reflect.DeepEqual(dns.Nameservers, []string{"192.0.2.53"}) {
		t.Errorf("got %+v, %v", dns, err)
	}
}

func render(t *testing.T, o Owner, ns string) []byte {
	t.Helper()
	b, err := RenderResolvConf(o, types.DNS{Nameservers: []string{ns}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestWriteVerifyRemove(t *testing.T) {
	base := filepath.Join(t.TempDir(), "etc", "netns")
	content := render(t, owner, "10.0.0.1")
	f := ResolvConf(base, "ns1", owner, content)
	if f.Path != filepath.Join(base, "ns1", "resolv.conf") || filepath.Dir(f.Temp) != filepath.Dir(f.Path) {
		t.Fatalf("planned %+v", f)
	}
	if err := Verify(f); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Verify before Write: %v, want ErrNotExist", err)
	}
	if err := Write(f, content, owner); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, f.Path); got != string(content) {
		t.Errorf("content %q, want %q", got, content)
	}
	for p, want := range map[string]os.FileMode{f.Path: 0o644, filepath.Dir(f.Path): 0o755 | fs.ModeDir} {
		st, err := os.Stat(p)
		if err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, st.Mode(), err, want)
		}
	}
	if exists(f.Temp) {
		t.Errorf("temp file %s left behind", f.Temp)
	}
	if err := Verify(f); err != nil {
		t.Errorf("Verify: %v", err)
	}
	// Writing again (an ADD retried after a crash) replaces our own file.
	if err := Write(f, content, owner); err != nil {
		t.Errorf("second Write: %v", err)
	}
	if err := Remove(f); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Dir(f.Path)) {
		t.Errorf("empty netns dir %s left", filepath.Dir(f.Path))
	}
	if !exists(base) {
		t.Errorf("base dir %s removed", base)
	}
	if err := Remove(f); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestWriteRefusesForeignFiles(t *testing.T) {
	other := Owner{Plugin: "bridge-lite", ContainerID: "c2", IfName: "eth0"}
	tests := []struct {
		name     string
		existing string
	}{
		{"user file", "nameserver 8.8.8.8\n"},
		{"another attachment's file", string(render(t, other, "10.9.9.9"))},
		{"empty file", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			content := render(t, owner, "10.0.0.1")
			f := ResolvConf(base, "ns1", owner, content)
			if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.Path, []byte(tt.existing), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Write(f, content, owner); !errors.Is(err, ErrNotOurs) {
				t.Fatalf("Write over %s: %v, want ErrNotOurs", tt.name, err)
			}
			if got := readFile(t, f.Path); got != tt.existing {
				t.Errorf("file changed to %q", got)
			}
			if exists(f.Temp) {
				t.Errorf("temp file left")
			}
			if err := Verify(f); err == nil {
				t.Error("Verify accepted a file that is not ours")
			}
			if err := Remove(f); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, f.Path); got != tt.existing {
				t.Errorf("Remove changed the file to %q", got)
			}
		})
	}
}

func TestRemoveKeepsChangedFilesAndOtherEntries(t *testing.T) {
	base := t.TempDir()
	content := render(t, owner, "10.0.0.1")
	f := ResolvConf(base, "ns1", owner, content)
	if err := Write(f, content, owner); err != nil {
		t.Fatal(err)
	}
	edited := string(content) + "nameserver 10.0.0.2\n"
	if err := os.WriteFile(f.Path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(f); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("Verify of an edited file: %v", err)
	}
	if err := Remove(f); err != nil {
		t.Fatal(err)
	}
	if readFile(t, f.Path) != edited {
		t.Error("edited file was removed or changed")
	}

	hosts := filepath.Join(base, "ns1", "hosts")
	if err := os.WriteFile(hosts, []byte("10.0.0.5 x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Remove(f); err != nil {
		t.Fatal(err)
	}
	if exists(f.Path) || !exists(hosts) {
		t.Errorf("want resolv.conf gone and hosts kept: resolv.conf %v, hosts %v", exists(f.Path), exists(hosts))
	}
}

func TestRemoveCleansCrashLeftovers(t *testing.T) {
	base := t.TempDir()
	content := render(t, owner, "10.0.0.1")
	f := ResolvConf(base, "ns1", owner, content)
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Temp, content[:10], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Remove(f); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Dir(f.Path)) {
		t.Error("temp file or dir left after Remove")
	}
}

func TestWriteChecksDigest(t *testing.T) {
	content := render(t, owner, "10.0.0.1")
	f := ResolvConf(t.TempDir(), "ns1", owner, content)
	if err := Write(f, append(content, '\n'), owner); err == nil {
		t.Fatal("Write accepted content other than the planned one")
	}
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n")
	f.Add("domain a\nsearch b c\nnameserver fe80::1%eth0\nnameserver 10.0.0.1\n")
	f.Add("#x\n;y\n nameserver 1.1.1.1\noptions\x00 a\n")
	f.Fuzz(func(t *testing.T, in string) {
		dns, err := ParseResolvConf(strings.NewReader(in))
		if err != nil {
			return
		}
		out, err := RenderResolvConf(owner, dns)
		if err != nil {
			t.Fatalf("parsed DNS %+v does not render: %v", dns, err)
		}
		again, err := ParseResolvConf(strings.NewReader(string(out)))
		if err != nil {
			t.Fatalf("rendered file does not parse: %v", err)
		}
		if !reflect.DeepEqual(again, dns) {
			t.Fatalf("round trip changed %+v into %+v\nrendered:\n%s", dns, again, out)
		}
	})
}
