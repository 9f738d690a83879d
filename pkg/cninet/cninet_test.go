package cninet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func TestParsePublish(t *testing.T) {
	tcp := func(hostIP string, host, ctr int) PortMapping {
		return PortMapping{HostPort: host, ContainerPort: ctr, Protocol: "tcp", HostIP: hostIP}
	}
	tests := []struct {
		spec    string
		want    []PortMapping
		wantErr string
	}{
		{spec: "8080:80", want: []PortMapping{tcp("", 8080, 80)}},
		{spec: "8080:80/udp", want: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "udp"}}},
		{spec: "53:53/SCTP", want: []PortMapping{{HostPort: 53, ContainerPort: 53, Protocol: "sctp"}}},
		{spec: "127.0.0.1:8080:80/tcp", want: []PortMapping{tcp("127.0.0.1", 8080, 80)}},
		{spec: "[fd00::1]:8080:80", want: []PortMapping{tcp("fd00::1", 8080, 80)}},
		{spec: "fd00::1:8080:80", want: []PortMapping{tcp("fd00::1", 8080, 80)}},
		{spec: "8000-8002:80-82", want: []PortMapping{tcp("", 8000, 80), tcp("", 8001, 81), tcp("", 8002, 82)}},
		{spec: "10.0.0.1:9000-9001:9000-9001/udp", want: []PortMapping{
			{HostPort: 9000, ContainerPort: 9000, Protocol: "udp", HostIP: "10.0.0.1"},
			{HostPort: 9001, ContainerPort: 9001, Protocol: "udp", HostIP: "10.0.0.1"},
		}},
		{spec: "80", wantErr: "no host port"},
		{spec: "", wantErr: "no host port"},
		{spec: ":80", wantErr: "host port: missing port"},
		{spec: "8080:", wantErr: "container port: missing port"},
		{spec: "8080:80/icmp", wantErr: `unknown protocol "icmp"`},
		{spec: "0:80", wantErr: "outside 1-65535"},
		{spec: "8080:65536", wantErr: "outside 1-65535"},
		{spec: "http:80", wantErr: `"http" is not a port number`},
		{spec: "+80:80", wantErr: "not a port number"},
		{spec: "host:8080:80", wantErr: `host IP "host" is not an IP address`},
		{spec: ":8080:80", wantErr: "empty host IP"},
		{spec: "[fd00::1:8080:80", wantErr: "lacks its closing bracket"},
		{spec: "fd00::1]:8080:80", wantErr: `host IP "fd00::1]" is not an IP address`},
		{spec: "[10.0.0.1]:8080:80", wantErr: "only an IPv6 address is bracketed"},
		{spec: "8000-8010:80-85", wantErr: "host range has 11 ports but container range has 6"},
		{spec: "8010-8000:80-90", wantErr: "ends before it starts"},
		{spec: "8000-:80", wantErr: "missing port"},
		{spec: "1-2000:1-2000", wantErr: "at most 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParsePublish(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePublish(%q) = %v, %v; want error containing %q", tt.spec, got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "hostPort:containerPort") {
					t.Errorf("error %q does not show the expected syntax", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParsePublish(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
			}
		})
	}
}

func TestPortMappingJSON(t *testing.T) {
	b, err := json.Marshal(PortMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"})
	if err != nil || string(b) != `{"hostPort":8080,"containerPort":80,"protocol":"tcp"}` {
		t.Errorf("json = %s, %v", b, err)
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestChooseSubnet(t *testing.T) {
	tests := []struct {
		name    string
		used    []netip.Prefix
		want    string
		wantErr bool
	}{
		{name: "nothing used", want: "10.88.0.0/16"},
		{name: "unrelated", used: prefixes("192.168.1.0/24", "10.97.0.0/24", "172.17.0.0/16"), want: "10.88.0.0/16"},
		{name: "address inside first", used: prefixes("10.88.3.0/24"), want: "10.89.0.0/16"},
		{name: "first two taken", used: prefixes("10.88.0.0/16", "10.89.255.0/24"), want: "10.90.0.0/16"},
		{name: "covering route", used: prefixes("10.64.0.0/11"), want: "10.96.0.0/16"},
		{name: "host route", used: prefixes("10.88.0.7/32"), want: "10.89.0.0/16"},
		{name: "all of 10/8", used: prefixes("10.0.0.0/8"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseSubnet(tt.used)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("chooseSubnet = %s, want an error", got)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("chooseSubnet = %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestEmbeddedConfList(t *testing.T) {
	list, err := libcni.ConfListFromBytes(embeddedConfList(netip.MustParsePrefix("10.89.0.0/16"), "/tmp/x"))
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != DefaultNetwork || list.CNIVersion != "1.1.0" || len(list.Plugins) != 2 {
		t.Fatalf("list %s %s with %d plugins", list.Name, list.CNIVersion, len(list.Plugins))
	}
	var bridge struct {
		Type         string          `json:"type"`
		Bridge       string          `json:"bridge"`
		IPMasq       bool            `json:"ipMasq"`
		Hairpin      bool            `json:"hairpinMode"`
		DefaultGW    bool            `json:"isDefaultGateway"`
		StateDir     string          `json:"stateDir"`
		Capabilities map[string]bool `json:"capabilities"`
		IPAM         struct {
			Type    string                `json:"type"`
			DataDir string                `json:"dataDir"`
			Ranges  [][]map[string]string `json:"ranges"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &bridge); err != nil {
		t.Fatal(err)
	}
	if bridge.Type != "bridge-lite" || bridge.Bridge != DefaultBridge || !bridge.IPMasq || !bridge.Hairpin || !bridge.DefaultGW ||
		bridge.StateDir != "/tmp/x/bridge-lite" || bridge.IPAM.Type != "host-local" || bridge.IPAM.DataDir != "/tmp/x/ipam" ||
		bridge.IPAM.Ranges[0][0]["subnet"] != "10.89.0.0/16" || !bridge.Capabilities["ips"] || !bridge.Capabilities["mac"] {
		t.Errorf("bridge-lite plugin: %s", list.Plugins[0].Bytes)
	}
	if pm := list.Plugins[1].Network; pm.Type != "portmap-lite" || !pm.Capabilities["portMappings"] {
		t.Errorf("portmap-lite plugin: %s", list.Plugins[1].Bytes)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	conf := `{"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge-lite"}]}`
	if err := os.WriteFile(filepath.Join(dir, "10-mine.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := Dirs{StateRoot: t.TempDir()}
	n, err := Load("mine", dir, []string{"/nonexistent"}, dirs)
	if err != nil || n.Embedded || n.Name() != "mine" || n.CacheDir != filepath.Join(dirs.StateRoot, "cache") {
		t.Fatalf("Load(mine) = %+v, %v", n, err)
	}
	_, err = Load("other", dir, nil, dirs)
	if err == nil || !strings.Contains(err.Error(), `network "other" is not defined in `+dir) || !strings.Contains(err.Error(), `["mine"]`) {
		t.Errorf("Load(other) error = %v", err)
	}
	if _, err := Load("", dir, nil, dirs); err == nil {
		t.Error("Load with no name succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, "05-bad.conflist"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("mine", dir, nil, dirs); err == nil || !strings.Contains(err.Error(), "loading network") {
		t.Errorf("Load with a malformed conflist: %v", err)
	}
}

func TestResolvConf(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("# stub\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nsearch host.test\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		dns     types.DNS
		host    string
		want    string
		wantErr bool
	}{
		{
			name: "result DNS",
			dns:  types.DNS{Nameservers: []string{"10.0.0.53"}, Domain: "corp.test", Search: []string{"corp.test"}, Options: []string{"ndots:2"}},
			host: host,
			want: "# Generated by nsnet from the CNI result\nnameserver 10.0.0.53\ndomain corp.test\nsearch corp.test\noptions ndots:2\n",
		},
		{
			name: "host without loopback",
			dns:  types.DNS{Search: []string{"ignored.test"}},
			host: host,
			want: "# Generated by nsnet from " + host + "\nnameserver 192.0.2.53\nsearch host.test\noptions edns0\n",
		},
		{
			name: "no host file",
			host: filepath.Join(t.TempDir(), "missing"),
			want: "# Generated by nsnet from " + filepath.Join(t.TempDir(), "missing") + "\n",
		},
		{
			name:    "bad result nameserver",
			dns:     types.DNS{Nameservers: []string{"not-an-ip"}},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolvConf(tt.dns, tt.host)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ResolvConf = %q, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "no host file" {
				if !strings.HasPrefix(string(got), "# Generated by nsnet from ") || strings.Contains(string(got), "nameserver") {
					t.Errorf("ResolvConf = %q", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Errorf("ResolvConf =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestHosts(t *testing.T) {
	const lo = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	tests := []struct {
		name     string
		hostname string
		ips      []string
		extra    []HostEntry
		want     string
		wantErr  bool
	}{
		{name: "localhost only", want: lo},
		{name: "no ips", hostname: "web", want: lo + "127.0.1.1\tweb\n"},
		{name: "result ips", hostname: "web", ips: []string{"10.88.0.2/16", "fd00::2"}, want: lo + "10.88.0.2\tweb\nfd00::2\tweb\n"},
		{name: "extra", hostname: "web", ips: []string{"10.88.0.2"}, extra: []HostEntry{{Name: "db", IP: "10.88.0.3"}},
			want: lo + "10.88.0.2\tweb\n10.88.0.3\tdb\n"},
		{name: "bad ip", hostname: "web", ips: []string{"nope"}, wantErr: true},
		{name: "bad name", extra: []HostEntry{{Name: "a b", IP: "10.0.0.1"}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Hosts(tt.hostname, tt.ips, tt.extra)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Hosts = %q, want an error", got)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("Hosts = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestOptionsCapabilityArgs(t *testing.T) {
	o := Options{
		PortMappings: []PortMapping{{HostPort: 1, ContainerPort: 2, Protocol: "tcp"}},
		MAC:          "02:00:00:00:00:01",
		Capabilities: map[string]any{"mac": "overridden", "bandwidth": map[string]any{"ingressRate": 1}},
	}
	got := o.capabilityArgs()
	if got["mac"] != o.MAC || got["bandwidth"] == nil || got["portMappings"] == nil || got["ips"] != nil {
		t.Errorf("capabilityArgs = %v", got)
	}
	if o.Capabilities["mac"] != "overridden" {
		t.Error("capabilityArgs changed Options.Capabilities")
	}
}

func TestNotFoundErrorsAreLibcnis(t *testing.T) {
	_, err := libcni.LoadConfList(t.TempDir(), "x")
	var nc libcni.NoConfigsFoundError
	if !errors.As(err, &nc) {
		t.Errorf("empty dir: %T %v", err, err)
	}
}

func TestSelfCleaning(t *testing.T) {
	embedded, err := libcni.ConfListFromBytes(embeddedConfList(netip.MustParsePrefix("10.99.0.0/24"), t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if !SelfCleaning(embedded) {
		t.Error("the built-in network is not self-cleaning")
	}
	for _, c := range []struct {
		name    string
		plugins string
		want    bool
	}{
		{"ours", `{"type":"bridge-lite","ipam":{"type":"host-local"}},{"type":"portmap-lite"}`, true},
		{"no ipam", `{"type":"bridge-lite"}`, true},
		{"delegated ipam", `{"type":"bridge-lite","ipam":{"type":"dhcp"}}`, false},
		{"reference bridge", `{"type":"bridge","ipam":{"type":"host-local"}},{"type":"portmap-lite"}`, false},
		{"extra plugin", `{"type":"bridge-lite"},{"type":"tuning"}`, false},
	} {
		list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"n","plugins":[` + c.plugins + `]}`))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := SelfCleaning(list); got != c.want {
			t.Errorf("%s: SelfCleaning = %v, want %v", c.name, got, c.want)
		}
	}
	if SelfCleaning(nil) {
		t.Error("SelfCleaning(nil) = true")
	}
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"8080:80", "8080:80/udp", "53:53/SCTP", "127.0.0.1:8080:80/tcp", "[fd00::1]:8080:80",
		"fd00::1:8080:80", "8000-8002:80-82", "10.0.0.1:9000-9001:9000-9001/udp", "80", "", ":80", "8080:", "8080:80/icmp",
		"0:80", "8080:65536", "http:80", "+80:80", "host:8080:80", ":8080:80", "8000-8010:80-85", "8010-8000:80-90",
		"8000-:80", "1-2000:1-2000", "1-1024:1-1024", "65535:65535/udp", "::ffff:10.0.0.1:80:80", "[fe80::1%eth0]:80:80",
		"[::1]:1-3:4-6/", "[10.0.0.1]:80:80", "[fd00::1:80:80", "0.0.0.0:80-80:80", "80:80/tcp/udp", "0080:00080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		ms, err := ParsePublish(spec)
		if err != nil {
			if !strings.Contains(err.Error(), "hostPort:containerPort") {
				t.Fatalf("ParsePublish(%q) error %q does not show the expected syntax", spec, err)
			}
			return
		}
		if len(ms) == 0 || len(ms) > maxPublishRange {
			t.Fatalf("ParsePublish(%q) gave %d mappings", spec, len(ms))
		}
		first := ms[0]
		if p := first.Protocol; p != "tcp" && p != "udp" && p != "sctp" {
			t.Fatalf("ParsePublish(%q) protocol %q", spec, p)
		}
		if first.HostIP != "" {
			// The plugins and iptables take the address as written here.
			addr, err := netip.ParseAddr(first.HostIP)
			if err != nil || addr.Zone() != "" || addr.Is4In6() || addr.String() != first.HostIP {
				t.Fatalf("ParsePublish(%q) host IP %q is not a plain canonical address", spec, first.HostIP)
			}
		}
		for k, m := range ms {
			want := PortMapping{HostPort: first.HostPort + k, ContainerPort: first.ContainerPort + k, Protocol: first.Protocol, HostIP: first.HostIP}
			if m != want {
				t.Fatalf("ParsePublish(%q) mapping %d is %+v, want %+v", spec, k, m, want)
			}
			if m.HostPort < 1 || m.HostPort > 65535 || m.ContainerPort < 1 || m.ContainerPort > 65535 {
				t.Fatalf("ParsePublish(%q) mapping %+v has a port outside 1-65535", spec, m)
			}
		}
		// Host IP text is a bare address or a bracketed IPv6 one.
		if rest, _, _ := strings.Cut(spec, "/"); strings.Count(rest, ":") > 1 {
			ip := rest[:strings.LastIndexByte(rest[:strings.LastIndexByte(rest, ':')], ':')]
			if bracketed := strings.HasPrefix(ip, "["); bracketed != strings.HasSuffix(ip, "]") || bracketed && !strings.Contains(ip, ":") {
				t.Fatalf("ParsePublish(%q) accepted host IP text %q", spec, ip)
			}
		}
		last := ms[len(ms)-1]
		ip := first.HostIP
		if strings.Contains(ip, ":") {
			ip = "[" + ip + "]"
		}
		text := fmt.Sprintf("%d-%d:%d-%d/%s", first.HostPort, last.HostPort, first.ContainerPort, last.ContainerPort, first.Protocol)
		if ip != "" {
			text = ip + ":" + text
		}
		if back, err := ParsePublish(text); err != nil || !reflect.DeepEqual(back, ms) {
			t.Fatalf("ParsePublish(%q) = %+v, but its text %q parses to %+v, %v", spec, ms, text, back, err)
		}
	})
}
