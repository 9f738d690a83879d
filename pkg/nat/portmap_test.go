package nat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// pmap builds a mapping to the container "address/prefix-length" (the form of a CNI result's
// address); hostIP may be empty.
func pmap(tb testing.TB, proto, hostIP string, hostPort int, container string, ctrPort int) PortMapping {
	tb.Helper()
	ip, n, err := net.ParseCIDR(container)
	if err != nil {
		tb.Fatal(err)
	}
	return PortMapping{Protocol: proto, HostIP: net.ParseIP(hostIP), HostPort: hostPort, ContainerIP: ip, ContainerPort: ctrPort, ContainerSubnet: n}
}

func TestPortMappingNormalize(t *testing.T) {
	v4 := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tests := []struct {
		name    string
		in      PortMapping
		want    pmEntry
		wantErr string
	}{
		{
			name: "ipv4 on every address",
			in:   pmap(t, "tcp", "", 8080, "10.88.0.7/16", 80),
			want: pmEntry{key: pmKey{proto: 6, port: 8080}, target: netip.MustParseAddrPort("10.88.0.7:80"), subnet: netip.MustParsePrefix("10.88.0.0/16")},
		},
		{
			name: "unspecified host ip means every address",
			in:   pmap(t, "udp", "0.0.0.0", 53, "10.88.0.7/16", 5353),
			want: pmEntry{key: pmKey{proto: 17, port: 53}, target: netip.MustParseAddrPort("10.88.0.7:5353"), subnet: netip.MustParsePrefix("10.88.0.0/16")},
		},
		{
			name: "ipv4 host ip in 16-byte form",
			in:   pmap(t, "sctp", "192.0.2.1", 9, "10.88.0.7/16", 9),
			want: pmEntry{key: pmKey{proto: 132, hostIP: v4("192.0.2.1"), port: 9}, target: netip.MustParseAddrPort("10.88.0.7:9"), subnet: netip.MustParsePrefix("10.88.0.0/16")},
		},
		{
			name: "ipv6 with host ip",
			in:   pmap(t, "tcp", "2001:db8::1", 443, "fd00:88::7/64", 8443),
			want: pmEntry{key: pmKey{v6: true, proto: 6, hostIP: v4("2001:db8::1"), port: 443}, target: netip.MustParseAddrPort("[fd00:88::7]:8443"), subnet: netip.MustParsePrefix("fd00:88::/64")},
		},
		{
			name: "ipv6 unspecified host ip",
			in:   pmap(t, "tcp", "::", 443, "fd00:88::7/64", 443),
			want: pmEntry{key: pmKey{v6: true, proto: 6, port: 443}, target: netip.MustParseAddrPort("[fd00:88::7]:443"), subnet: netip.MustParsePrefix("fd00:88::/64")},
		},
		{
			name: "limits",
			in:   pmap(t, "tcp", "", 65535, "10.88.0.7/16", 1),
			want: pmEntry{key: pmKey{proto: 6, port: 65535}, target: netip.MustParseAddrPort("10.88.0.7:1"), subnet: netip.MustParsePrefix("10.88.0.0/16")},
		},
		{name: "uppercase protocol", in: pmap(t, "TCP", "", 80, "10.88.0.7/16", 80), wantErr: `protocol "TCP"`},
		{name: "icmp", in: pmap(t, "icmp", "", 80, "10.88.0.7/16", 80), wantErr: `protocol "icmp"`},
		{name: "empty protocol", in: pmap(t, "", "", 80, "10.88.0.7/16", 80), wantErr: "protocol"},
		{name: "host port 0", in: pmap(t, "tcp", "", 0, "10.88.0.7/16", 80), wantErr: "host port 0 out of range"},
		{name: "host port too big", in: pmap(t, "tcp", "", 65536, "10.88.0.7/16", 80), wantErr: "host port 65536 out of range"},
		{name: "container port 0", in: pmap(t, "udp", "", 80, "10.88.0.7/16", 0), wantErr: "container port 0 out of range"},
		{name: "container port negative", in: pmap(t, "udp", "", 80, "10.88.0.7/16", -1), wantErr: "container port -1 out of range"},
		{name: "ipv6 host ip for ipv4 container", in: pmap(t, "tcp", "2001:db8::1", 80, "10.88.0.7/16", 80), wantErr: "different families"},
		{name: "ipv4 host ip for ipv6 container", in: pmap(t, "tcp", "192.0.2.1", 80, "fd00::7/64", 80), wantErr: "different families"},
		{name: "ipv6 unspecified for ipv4 container", in: pmap(t, "tcp", "::", 80, "10.88.0.7/16", 80), wantErr: "different families"},
		{name: "no container ip", in: PortMapping{Protocol: "tcp", HostPort: 80, ContainerPort: 80, ContainerSubnet: mustCIDR(t, "10.88.0.7/16")}, wantErr: "invalid container IP"},
		{name: "unspecified container ip", in: pmap(t, "tcp", "", 80, "0.0.0.0/0", 80), wantErr: "invalid container IP"},
		{name: "no subnet", in: PortMapping{Protocol: "tcp", HostPort: 80, ContainerIP: net.ParseIP("10.0.0.1"), ContainerPort: 80}, wantErr: "no container subnet"},
		{
			name:    "container outside subnet",
			in:      PortMapping{Protocol: "tcp", HostPort: 80, ContainerIP: net.ParseIP("10.0.1.1"), ContainerPort: 80, ContainerSubnet: mustCIDR(t, "10.0.0.1/24")},
			wantErr: "outside its subnet",
		},
		{
			name:    "subnet of the other family",
			in:      PortMapping{Protocol: "tcp", HostPort: 80, ContainerIP: net.ParseIP("10.0.1.1"), ContainerPort: 80, ContainerSubnet: mustCIDR(t, "fd00::1/64")},
			wantErr: "outside its subnet",
		},
		{
			name:    "bad host ip",
			in:      PortMapping{Protocol: "tcp", HostIP: net.IP{1, 2, 3}, HostPort: 80, ContainerIP: net.ParseIP("10.0.0.1"), ContainerPort: 80, ContainerSubnet: mustCIDR(t, "10.0.0.1/24")},
			wantErr: "invalid host IP",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("normalize() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("normalize(): %v", err)
			}
			if got.key != tt.want.key || got.target != tt.want.target || got.subnet != tt.want.subnet {
				t.Errorf("normalize() = %v (subnet %s), want %v (subnet %s)", got, got.subnet, tt.want, tt.want.subnet)
			}
			if !reflect.DeepEqual(got.orig, tt.in) {
				t.Errorf("normalize() kept %+v as the original, want %+v", got.orig, tt.in)
			}
		})
	}
}

func TestNormalizeMappings(t *testing.T) {
	a := pmap(t, "tcp", "", 80, "10.88.0.7/16", 80)
	tests := []struct {
		name    string
		in      []PortMapping
		want    []string
		wantErr string
	}{
		{name: "empty", in: nil, want: nil},
		{name: "exact duplicate dropped", in: []PortMapping{a, a}, want: []string{"tcp 0.0.0.0:80 -> 10.88.0.7:80"}},
		{
			name: "one port in both families and with a host ip",
			in: []PortMapping{a, pmap(t, "tcp", "", 80, "fd00::7/64", 80), pmap(t, "tcp", "10.1.1.1", 80, "10.88.0.8/16", 80),
				pmap(t, "udp", "", 80, "10.88.0.8/16", 80)},
			want: []string{"tcp 0.0.0.0:80 -> 10.88.0.7:80", "tcp [::]:80 -> [fd00::7]:80", "tcp 10.1.1.1:80 -> 10.88.0.8:80", "udp 0.0.0.0:80 -> 10.88.0.8:80"},
		},
		{name: "same key, two targets", in: []PortMapping{a, pmap(t, "tcp", "0.0.0.0", 80, "10.88.0.8/16", 80)}, wantErr: "publish the same host port"},
		{name: "same key, two ports", in: []PortMapping{a, pmap(t, "tcp", "", 80, "10.88.0.7/16", 81)}, wantErr: "publish the same host port"},
		{name: "one address, two subnets", in: []PortMapping{a, pmap(t, "udp", "", 80, "10.88.0.7/24", 80)}, wantErr: "two subnets"},
		{name: "an invalid one", in: []PortMapping{a, pmap(t, "tcp", "", 0, "10.88.0.7/16", 80)}, wantErr: "host port 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			es, err := normalizeMappings(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPMEntryMappingRoundTrip(t *testing.T) {
	for _, m := range []PortMapping{
		pmap(t, "tcp", "", 8080, "10.88.0.7/16", 80),
		pmap(t, "sctp", "192.0.2.1", 9, "10.88.0.7/16", 9),
		pmap(t, "udp", "2001:db8::1", 53, "fd00:88::7/64", 53),
	} {
		e, err := m.normalize()
		if err != nil {
			t.Fatal(err)
		}
		back, err := e.mapping().normalize()
		if err != nil {
			t.Fatalf("mapping() of %v does not validate: %v", e, err)
		}
		if back.key != e.key || back.target != e.target || back.subnet != e.subnet {
			t.Errorf("round trip of %v gave %v", e, back)
		}
		if e.mapping().ContainerIP.To4() == nil != e.key.v6 {
			t.Errorf("mapping() of %v has container IP %v of the wrong length", e, e.mapping().ContainerIP)
		}
	}
}

func TestConflictError(t *testing.T) {
	m := pmap(t, "tcp", "", 8080, "10.88.0.9/16", 80)
	var err error = &ConflictError{Mapping: m, Existing: "10.88.0.7:80"}
	want := "cannot publish tcp *:8080 -> 10.88.0.9:80: host port already published to 10.88.0.7:80"
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Existing != "10.88.0.7:80" {
		t.Errorf("errors.As: %v", ce)
	}
	m6 := pmap(t, "udp", "2001:db8::1", 53, "fd00::9/64", 53)
	if got := (&ConflictError{Mapping: m6, Existing: "[fd00::7]:53"}).Error(); !strings.Contains(got, "udp [2001:db8::1]:53 -> [fd00::9]:53") {
		t.Errorf("IPv6 message %q", got)
	}
}

func TestPMKeyString(t *testing.T) {
	for k, want := range map[pmKey]string{
		{proto: 6, port: 80}:            "tcp 0.0.0.0:80",
		{v6: true, proto: 17, port: 53}: "udp [::]:53",
		{proto: 132, hostIP: netip.MustParseAddr("192.0.2.1"), port: 9}:             "sctp 192.0.2.1:9",
		{v6: true, proto: 6, hostIP: netip.MustParseAddr("2001:db8::1"), port: 443}: "tcp [2001:db8::1]:443",
		{proto: 1, port: 1}: "proto-1 0.0.0.0:1",
	} {
		if got := k.String(); got != want {
			t.Errorf("%+v: %q, want %q", k, got, want)
		}
	}
}

func mustEntry(tb testing.TB, m PortMapping) pmEntry {
	tb.Helper()
	e, err := m.normalize()
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// The expected bytes are what nft itself writes for the same elements (nft --debug=netlink).
func TestPMElementEncoding(t *testing.T) {
	tests := []struct {
		m        PortMapping
		set      string
		key, val []byte
	}{
		{
			m:   pmap(t, "tcp", "", 8080, "10.88.0.7/16", 80),
			set: "pm4",
			key: []byte{6, 0, 0, 0, 0x1f, 0x90, 0, 0},
			val: []byte{10, 88, 0, 7, 0, 80, 0, 0},
		},
		{
			m:   pmap(t, "udp", "10.1.1.1", 53, "10.88.0.7/16", 53),
			set: "pm4ip",
			key: []byte{10, 1, 1, 1, 17, 0, 0, 0, 0, 53, 0, 0},
			val: []byte{10, 88, 0, 7, 0, 53, 0, 0},
		},
		{
			m:   pmap(t, "sctp", "", 8080, "fd00:88::7/64", 80),
			set: "pm6",
			key: []byte{132, 0, 0, 0, 0x1f, 0x90, 0, 0},
			val: []byte{0xfd, 0, 0, 0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 80, 0, 0},
		},
		{
			m:   pmap(t, "tcp", "fd00::1", 8080, "fd00:88::7/64", 80),
			set: "pm6ip",
			key: []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 6, 0, 0, 0, 0x1f, 0x90, 0, 0},
			val: []byte{0xfd, 0, 0, 0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 80, 0, 0},
		},
	}
	for _, tt := range tests {
		e := mustEntry(t, tt.m)
		if got := pmMapName(e.key.v6, e.key.hostIP.IsValid()); got != tt.set {
			t.Errorf("%v goes to %s, want %s", e, got, tt.set)
		}
		el := pmElement(e)
		if !slices.Equal(el.Key, tt.key) || !slices.Equal(el.Val, tt.val) {
			t.Errorf("%v: element %x : %x, want %x : %x", e, el.Key, el.Val, tt.key, tt.val)
		}
		k, target, ok := decodePMElement(tt.set, el)
		if !ok || k != e.key || target != e.target {
			t.Errorf("%v decodes to %v -> %v (ok %v)", e, k, target, ok)
		}
		for name, bad := range map[string]nftables.SetElement{
			"short key":   {Key: el.Key[:len(el.Key)-1], Val: el.Val},
			"long value":  {Key: el.Key, Val: append(slices.Clone(el.Val), 0)},
			"no value":    {Key: el.Key},
			"other set":   el,
			"empty key":   {Val: el.Val},
			"family swap": {Key: el.Key, Val: el.Val[:4]},
		} {
			set := tt.set
			if name == "other set" {
				set = "gen"
			}
			if _, _, ok := decodePMElement(set, bad); ok {
				t.Errorf("%v: %s decodes", e, name)
			}
		}
	}
}

func TestHairpinElement(t *testing.T) {
	el := pmHairpinElement(netip.MustParseAddr("10.88.0.7"), netip.MustParsePrefix("10.88.0.0/16"))
	// nft --debug=netlink: element 0700580a 0000580a - 0700580a ffff580a
	if !slices.Equal(el.Key, []byte{10, 88, 0, 7, 10, 88, 0, 0}) || !slices.Equal(el.KeyEnd, []byte{10, 88, 0, 7, 10, 88, 255, 255}) {
		t.Errorf("element %x - %x", el.Key, el.KeyEnd)
	}
	for _, tc := range []struct{ ip, subnet string }{
		{"10.88.0.7", "10.88.0.0/16"}, {"10.0.0.1", "10.0.0.1/32"}, {"10.0.0.1", "0.0.0.0/0"},
		{"fd00:88::7", "fd00:88::/64"}, {"fd00::1", "fd00::1/128"},
	} {
		ip, p := netip.MustParseAddr(tc.ip), netip.MustParsePrefix(tc.subnet)
		gotIP, gotP, ok := decodeHairpin(ip.Is6(), pmHairpinElement(ip, p))
		if !ok || gotIP != ip || gotP != p {
			t.Errorf("%s . %s decodes to %s . %s (ok %v)", ip, p, gotIP, gotP, ok)
		}
	}
	notPrefix := nftables.SetElement{Key: []byte{10, 0, 0, 1, 10, 0, 0, 1}, KeyEnd: []byte{10, 0, 0, 1, 10, 0, 0, 2}}
	if _, _, ok := decodeHairpin(false, notPrefix); ok {
		t.Error("a range that is no prefix decodes")
	}
	twoIPs := nftables.SetElement{Key: []byte{10, 0, 0, 1, 10, 0, 0, 0}, KeyEnd: []byte{10, 0, 0, 2, 10, 0, 0, 255}}
	if _, _, ok := decodeHairpin(false, twoIPs); ok {
		t.Error("a range over two container addresses decodes")
	}
	if _, _, ok := decodeHairpin(true, el); ok {
		t.Error("an IPv4 element decodes as IPv6")
	}
}

func TestPMRules(t *testing.T) {
	sets := map[string]*nftables.Set{}
	for i, s := range pmSetSpecs() {
		s.ID = uint32(i + 1)
		sets[s.Name] = s
	}
	rules := pmRules(sets)
	wantComments := map[string][]string{
		pmChainPre:     {"nsnet-pm local-dnat"},
		pmChainOut:     {"nsnet-pm local-dnat"},
		pmChainPorts:   {"nsnet-pm skip-loopback6", "nsnet-pm dnat4-hostip", "nsnet-pm dnat4", "nsnet-pm dnat6-hostip", "nsnet-pm dnat6"},
		pmChainPost:    {"nsnet-pm localhost-masq", "nsnet-pm hairpin4", "nsnet-pm hairpin6"},
		pmChainMartian: {"nsnet-pm martian4-saddr", "nsnet-pm martian4-daddr", "nsnet-pm martian6-saddr", "nsnet-pm martian6-daddr"},
	}
	if len(rules) != len(pmChains()) {
		t.Errorf("rules for %d chains, want %d", len(rules), len(pmChains()))
	}
	for chain, want := range wantComments {
		if got := ruleComments(rules[chain]); !slices.Equal(got, want) {
			t.Errorf("chain %s: %q, want %q", chain, got, want)
		}
		for _, r := range rules[chain] {
			if r.Chain.Name != chain || r.Table.Name != pmTableName || r.Table.Family != nftables.TableFamilyINet {
				t.Errorf("rule for %s placed in %s %s", chain, r.Table.Name, r.Chain.Name)
			}
		}
	}

	// Registers as nft assigns them: the key fields in consecutive 32-bit registers, the
	// target port after the target address.
	dnat4ip := rules[pmChainPorts][1].Exprs
	want4ip := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: "pm4ip", SetID: sets["pm4ip"].ID, DestRegister: 1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: 2, RegAddrMin: 1, RegProtoMin: 9},
	}
	if !reflect.DeepEqual(dnat4ip, want4ip) {
		t.Errorf("dnat4-hostip rule:\n%s\nwant\n%s", dump(dnat4ip), dump(want4ip))
	}
	dnat6 := rules[pmChainPorts][4].Exprs
	want6 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: "pm6", SetID: sets["pm6"].ID, DestRegister: 1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: 10, RegAddrMin: 1, RegProtoMin: 12},
	}
	if !reflect.DeepEqual(dnat6, want6) {
		t.Errorf("dnat6 rule:\n%s\nwant\n%s", dump(dnat6), dump(want6))
	}
	dnat6ip := rules[pmChainPorts][3].Exprs
	if m := dnat6ip[3].(*expr.Meta); m.Register != 12 {
		t.Errorf("dnat6-hostip loads l4proto into register %d, want 12 (after a 16-byte address)", m.Register)
	}
	hp6 := rules[pmChainPost][2].Exprs
	if p := hp6[6].(*expr.Payload); p.Offset != 8 || p.Len != 16 || p.DestRegister != 12 {
		t.Errorf("hairpin6 loads the source as %+v", p)
	}
	if l := hp6[7].(*expr.Lookup); l.SetName != "hp6" || l.IsDestRegSet {
		t.Errorf("hairpin6 lookup %+v", l)
	}
}

func dump(es []expr.Any) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%T %+v\n", e, e)
	}
	return b.String()
}

func TestIptDNATSpec(t *testing.T) {
	tests := []struct {
		m    PortMapping
		line string
	}{
		{
			m:    pmap(t, "tcp", "", 8080, "10.88.0.7/16", 80),
			line: `-A NSNET-HOSTPORTS -p tcp -m tcp --dport 8080 -m comment --comment "nsnet-pm 10.88.0.7:80" -j DNAT --to-destination 10.88.0.7:80`,
		},
		{
			m:    pmap(t, "udp", "10.1.1.1", 53, "10.88.0.7/16", 5353),
			line: `-A NSNET-HOSTPORTS -d 10.1.1.1/32 -p udp -m udp --dport 53 -m comment --comment "nsnet-pm 10.88.0.7:5353" -j DNAT --to-destination 10.88.0.7:5353`,
		},
		{
			m:    pmap(t, "sctp", "fd00::1", 8080, "fd00:88::7/64", 80),
			line: `-A NSNET-HOSTPORTS -d fd00::1/128 -p sctp -m sctp --dport 8080 -m comment --comment "nsnet-pm [fd00:88::7]:80" -j DNAT --to-destination [fd00:88::7]:80`,
		},
	}
	for _, tt := range tests {
		e := mustEntry(t, tt.m)
		spec := iptDNATSpec(e)
		if got := "-A NSNET-HOSTPORTS " + joinIptWords(spec); got != tt.line {
			t.Errorf("spec of %v:\n%s\nwant\n%s", e, got, tt.line)
		}
		rules := parseIptRules([]string{"-N NSNET-HOSTPORTS", tt.line}, iptPMChain)
		if len(rules) != 1 {
			t.Fatalf("%d rules parsed from %q", len(rules), tt.line)
		}
		got, ok := rules[0].entry(e.key.v6)
		if !ok || got.key != e.key || got.target != e.target {
			t.Errorf("%q parses to %v (ok %v), want %v", tt.line, got, ok, e)
		}
		if !slices.Equal(rules[0].args, spec) {
			t.Errorf("parsed rulespec %q, want %q", rules[0].args, spec)
		}
	}

	foreign := []string{
		`-A NSNET-HOSTPORTS -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:80`,
		`-A NSNET-HOSTPORTS -p icmp -m comment --comment "nsnet-pm 10.0.0.1:80" -j DNAT --to-destination 10.0.0.1:80`,
		`-A NSNET-HOSTPORTS -d 10.0.0.0/24 -p tcp -m tcp --dport 80 -m comment --comment "nsnet-pm 10.0.0.1:80" -j DNAT --to-destination 10.0.0.1:80`,
		`-A NSNET-HOSTPORTS -p tcp -m tcp --dport 80 -m comment --comment "nsnet-pm 10.0.0.1" -j DNAT --to-destination 10.0.0.1`,
	}
	for _, line := range foreign {
		for _, r := range parseIptRules([]string{line}, iptPMChain) {
			if e, ok := r.entry(false); ok {
				t.Errorf("%q is taken as ours: %v", line, e)
			}
		}
	}
}

// joinIptWords quotes words the way iptables -S does.
func joinIptWords(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if strings.ContainsAny(w, " \"") {
			w = `"` + strings.ReplaceAll(w, `"`, `\"`) + `"`
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}

func TestIptHairpinAndMartianSpecs(t *testing.T) {
	ip, subnet := netip.MustParseAddr("10.88.0.7"), netip.MustParsePrefix("10.88.0.0/16")
	line := "-A NSNET-HOSTPORTS-MASQ " + joinIptWords(iptHairpinSpec(ip, subnet))
	want := `-A NSNET-HOSTPORTS-MASQ -s 10.88.0.0/16 -d 10.88.0.7/32 -m conntrack --ctstate DNAT -m comment --comment "nsnet-pm hairpin 10.88.0.7" -j MASQUERADE`
	if line != want {
		t.Errorf("hairpin rule\n%s\nwant\n%s", line, want)
	}
	r := parseIptRules([]string{line}, iptPMMasqChain)[0]
	if gotIP, gotSubnet, ok := r.hairpin(); !ok || gotIP != ip || gotSubnet != subnet {
		t.Errorf("hairpin rule parses to %s %s %v", gotIP, gotSubnet, ok)
	}
	lh := parseIptRules([]string{"-A NSNET-HOSTPORTS-MASQ " + joinIptWords(iptLocalhostSpec())}, iptPMMasqChain)[0]
	if _, _, ok := lh.hairpin(); ok || lh.comment != iptLocalhostTag {
		t.Errorf("localhost rule parses as %+v", lh)
	}
	if _, ok := lh.entry(false); ok {
		t.Error("localhost rule parses as a DNAT rule")
	}
	for _, v6 := range []bool{false, true} {
		for _, spec := range iptMartianRules(v6) {
			r := parseIptRules([]string{"-A NSNET-MARTIAN " + joinIptWords(spec)}, iptMartianChain)[0]
			if !strings.HasPrefix(r.comment, "nsnet-pm martian ") || (r.src != loopbackPrefix(v6) && r.dst != loopbackPrefix(v6)) {
				t.Errorf("martian rule %q parses as %+v", spec, r)
			}
		}
	}
}

func TestSortMappings(t *testing.T) {
	es := []pmEntry{
		mustEntry(t, pmap(t, "udp", "", 53, "fd00::7/64", 53)),
		mustEntry(t, pmap(t, "udp", "", 53, "10.88.0.7/16", 53)),
		mustEntry(t, pmap(t, "tcp", "10.1.1.1", 80, "10.88.0.8/16", 80)),
		mustEntry(t, pmap(t, "tcp", "", 80, "10.88.0.7/16", 80)),
		mustEntry(t, pmap(t, "tcp", "", 22, "10.88.0.7/16", 22)),
	}
	var got []string
	for _, m := range sortMappings(es) {
		got = append(got, describeMapping(m))
	}
	want := []string{
		"tcp *:22 -> 10.88.0.7:22", "tcp *:80 -> 10.88.0.7:80", "tcp 10.1.1.1:80 -> 10.88.0.8:80",
		"udp *:53 -> 10.88.0.7:53", "udp *:53 -> [fd00::7]:53",
	}
	if !slices.Equal(got, want) {
		t.Errorf("sorted:\n%q\nwant\n%q", got, want)
	}
}

func TestUnknownPortmapBackend(t *testing.T) {
	if _, err := NewPortMapper("ebpf"); err == nil || !strings.Contains(err.Error(), "unknown port mapping backend") {
		t.Errorf("NewPortMapper(ebpf) error = %v", err)
	}
}

func TestInvalidMappingTouchesNothing(t *testing.T) {
	// Validation runs before any socket or command, so this is safe outside a test netns.
	bad := []PortMapping{pmap(t, "tcp", "", 80, "10.88.0.7/16", 80), pmap(t, "tcp", "", 0, "10.88.0.7/16", 80)}
	for _, p := range []PortMapper{nftPortMapper{}, &iptPortMapper{}} {
		for op, f := range map[string]func([]PortMapping) error{"Add": p.Add, "Del": p.Del, "Check": p.Check} {
			if err := f(bad); err == nil || !strings.Contains(err.Error(), "host port 0") {
				t.Errorf("%s %s(invalid) error = %v", p.Backend(), op, err)
			}
		}
	}
}
