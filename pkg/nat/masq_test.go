package nat

import (
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

func mustCIDR(t testing.TB, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	// Like a CNI result's "address": the container address with the subnet's mask.
	n.IP = ip
	return n
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      MasqEntry
		want    entry
		wantErr string
	}{
		{
			name: "ipv4 address with mask",
			in:   MasqEntry{Network: "net1", Subnet: mustCIDR(t, "10.88.0.5/16"), IP: net.ParseIP("10.88.0.5")},
			want: entry{network: "net1", ip: netip.MustParseAddr("10.88.0.5"), subnet: netip.MustParsePrefix("10.88.0.0/16")},
		},
		{
			name: "ipv4 in 16-byte form with a 128-bit mask",
			in: MasqEntry{Network: "n", IP: net.ParseIP("10.1.2.3").To16(),
				Subnet: &net.IPNet{IP: net.ParseIP("10.1.2.0").To16(), Mask: net.CIDRMask(120, 128)}},
			want: entry{network: "n", ip: netip.MustParseAddr("10.1.2.3"), subnet: netip.MustParsePrefix("10.1.2.0/24")},
		},
		{
			name: "ipv6",
			in:   MasqEntry{Network: "a.b_c-d", Subnet: mustCIDR(t, "fd00:1::7/64"), IP: net.ParseIP("fd00:1::7")},
			want: entry{network: "a.b_c-d", ip: netip.MustParseAddr("fd00:1::7"), subnet: netip.MustParsePrefix("fd00:1::/64")},
		},
		{name: "bad network", in: MasqEntry{Network: "-x", Subnet: mustCIDR(t, "10.0.0.1/24"), IP: net.ParseIP("10.0.0.1")}, wantErr: "invalid network name"},
		{name: "empty network", in: MasqEntry{Subnet: mustCIDR(t, "10.0.0.1/24"), IP: net.ParseIP("10.0.0.1")}, wantErr: "invalid network name"},
		{name: "no ip", in: MasqEntry{Network: "n", Subnet: mustCIDR(t, "10.0.0.1/24")}, wantErr: "invalid IP"},
		{name: "no subnet", in: MasqEntry{Network: "n", IP: net.ParseIP("10.0.0.1")}, wantErr: "no subnet"},
		{name: "outside subnet", in: MasqEntry{Network: "n", Subnet: mustCIDR(t, "10.0.0.1/24"), IP: net.ParseIP("10.0.1.1")}, wantErr: "outside its subnet"},
		{name: "family mismatch", in: MasqEntry{Network: "n", Subnet: mustCIDR(t, "fd00::1/64"), IP: net.ParseIP("10.0.1.1")}, wantErr: "outside its subnet"},
		{
			name:    "bad mask",
			in:      MasqEntry{Network: "n", Subnet: &net.IPNet{IP: net.ParseIP("10.0.0.0").To4(), Mask: net.IPMask{255, 0, 255, 0}}, IP: net.ParseIP("10.0.0.1")},
			wantErr: "invalid subnet mask",
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
			if got != tt.want {
				t.Errorf("normalize() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("verylongnetworkname", 20)
	hex8 := regexp.MustCompile(`^[0-9a-f]{8}$`)
	for _, network := range []string{"a", "mynet", "mynet2", long} {
		h := netHash(network)
		if !hex8.MatchString(h) {
			t.Errorf("netHash(%q) = %q, want 8 hex digits", network, h)
		}
		if netHash(network) != h {
			t.Errorf("netHash(%q) is not stable", network)
		}
		n4, n6 := nftNetNames(network, false), nftNetNames(network, true)
		if n4.src != "n4_"+h || n4.dst != "s4_"+h || n6.src != "n6_"+h || n6.dst != "s6_"+h {
			t.Errorf("nft names for %q: %+v %+v", network, n4, n6)
		}
		if len(n4.comment) > nftCommentMax || !strings.HasPrefix(n4.comment, "nsnet-masq n4_"+h+" net=") {
			t.Errorf("nft comment for %q = %q", network, n4.comment)
		}
		if c := iptNetChain(network); c != "NSNET-M-"+h || len(c) > 28 {
			t.Errorf("iptNetChain(%q) = %q", network, c)
		}
	}
	if netHash("a") == netHash("b") {
		t.Error("different networks share a hash")
	}
	// The known value pins the naming: changing it would orphan rules of running containers.
	if got := netHash("mynet"); got != "11c844f9" {
		t.Errorf(`netHash("mynet") = %q; changing it breaks upgrades`, got)
	}
}

func TestCommentName(t *testing.T) {
	tests := []struct {
		prefix, network string
		max             int
		want            string
	}{
		{"p=", "short", 20, "p=short"},
		{"p=", "exactly8", 10, "p=exactly8"},
		{"p=", "toolongname", 10, "p=toolo..."},
	}
	for _, tt := range tests {
		got := commentName(tt.prefix, tt.network, tt.max)
		if got != tt.want || len(got) > tt.max {
			t.Errorf("commentName(%q, %q, %d) = %q, want %q", tt.prefix, tt.network, tt.max, got, tt.want)
		}
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestCoverPrefixes(t *testing.T) {
	tests := []struct {
		name string
		in   []netip.Prefix
		want []netip.Prefix
	}{
		{"empty", nil, nil},
		{"one", prefixes("10.0.0.0/24"), prefixes("10.0.0.0/24")},
		{"duplicates", prefixes("10.0.0.0/24", "10.0.0.0/24", "10.0.0.0/24"), prefixes("10.0.0.0/24")},
		{"disjoint sorted", prefixes("10.0.1.0/24", "10.0.0.0/24"), prefixes("10.0.0.0/24", "10.0.1.0/24")},
		{"contained dropped", prefixes("10.0.1.0/24", "10.0.0.0/16", "10.0.2.0/24"), prefixes("10.0.0.0/16")},
		{"unmasked input", prefixes("10.0.0.5/24"), prefixes("10.0.0.0/24")},
		{"ipv6", prefixes("fd00::/64", "fd00::/48", "fd01::/64"), prefixes("fd00::/48", "fd01::/64")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := coverPrefixes(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("coverPrefixes(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestLastAddrAndIntervals(t *testing.T) {
	tests := []struct {
		prefix, last, end string // end "" = open to the top
	}{
		{"10.0.0.0/24", "10.0.0.255", "10.0.1.0"},
		{"10.0.0.0/20", "10.0.15.255", "10.0.16.0"},
		{"10.0.0.7/32", "10.0.0.7", "10.0.0.8"},
		{"255.255.255.0/24", "255.255.255.255", ""},
		{"fd00:1::/64", "fd00:1::ffff:ffff:ffff:ffff", "fd00:1:0:1::"},
		{"fd00::/7", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe00::"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		if got := lastAddr(p); got.String() != tt.last {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, tt.last)
		}
		iv := prefixInterval(p)
		els := iv.elements()
		if tt.end == "" {
			if iv.end.IsValid() || len(els) != 1 {
				t.Errorf("prefixInterval(%s) = %+v (%d elements), want open end", p, iv, len(els))
			}
		} else if iv.end.String() != tt.end || len(els) != 2 || !els[1].IntervalEnd {
			t.Errorf("prefixInterval(%s) = %+v, want end %s", p, iv, tt.end)
		}
		if got := parseIntervals(els); len(got) != 1 || got[0] != iv {
			t.Errorf("parseIntervals(elements(%s)) = %+v, want [%+v]", p, got, iv)
		}
		if !iv.containsPrefix(p) {
			t.Errorf("interval of %s does not contain it", p)
		}
	}
}

func TestParseIntervals(t *testing.T) {
	el := func(s string, end bool) nftables.SetElement {
		return nftables.SetElement{Key: netip.MustParseAddr(s).AsSlice(), IntervalEnd: end}
	}
	iv := func(start, end string) interval {
		i := interval{start: netip.MustParseAddr(start)}
		if end != "" {
			i.end = netip.MustParseAddr(end)
		}
		return i
	}
	// Shuffled, with nft's 0.0.0.0 end marker and two adjacent ranges sharing 10.0.1.0.
	els := []nftables.SetElement{
		el("10.0.2.0", true), el("10.0.1.0", false), el("0.0.0.0", true),
		el("10.0.1.0", true), el("10.0.0.0", false), el("255.255.255.0", false),
	}
	want := []interval{iv("10.0.0.0", "10.0.1.0"), iv("10.0.1.0", "10.0.2.0"), iv("255.255.255.0", "")}
	if got := parseIntervals(els); !slices.Equal(got, want) {
		t.Errorf("parseIntervals() = %v, want %v", got, want)
	}
	wide := iv("10.0.0.0", "10.1.0.0")
	if !wide.containsPrefix(netip.MustParsePrefix("10.0.3.0/24")) || wide.containsPrefix(netip.MustParsePrefix("10.0.0.0/15")) {
		t.Error("containsPrefix gives wrong answers for 10.0.0.0-10.1.0.0")
	}
}

func TestMemberMask(t *testing.T) {
	for _, tt := range []struct{ ip, subnet string }{
		{"10.88.0.5", "10.88.0.0/16"},
		{"10.88.0.5", "10.88.0.5/32"},
		{"fd00:1::7", "fd00:1::/64"},
		{"fd00:1::7", "fd00::/16"},
	} {
		e := entry{network: "n", ip: netip.MustParseAddr(tt.ip), subnet: netip.MustParsePrefix(tt.subnet)}
		mask := memberMask(e)
		if len(mask) != e.ip.BitLen()/8 {
			t.Errorf("memberMask(%s) is %d bytes", tt.subnet, len(mask))
		}
		if got := memberSubnet(e.ip, mask); got != e.subnet {
			t.Errorf("memberSubnet(%s, mask of %s) = %s", e.ip, e.subnet, got)
		}
	}
	a := netip.MustParseAddr("10.0.0.1")
	for _, bad := range [][]byte{nil, {255, 0, 255, 0}, net.CIDRMask(64, 128)} {
		if p := memberSubnet(a, bad); p.IsValid() {
			t.Errorf("memberSubnet(%s, %v) = %s, want invalid", a, bad, p)
		}
	}
	members := map[netip.Addr]netip.Prefix{
		netip.MustParseAddr("10.0.0.2"): netip.MustParsePrefix("10.0.0.0/24"),
		netip.MustParseAddr("10.0.1.2"): netip.MustParsePrefix("10.0.1.0/24"),
		netip.MustParseAddr("10.0.2.2"): {},
	}
	got := memberSubnets(members, netip.MustParseAddr("10.0.1.2"))
	if !slices.Equal(got, prefixes("10.0.0.0/24")) {
		t.Errorf("memberSubnets() = %v", got)
	}
}

func TestIntervalContains(t *testing.T) {
	iv := func(start, end string) interval {
		i := interval{start: netip.MustParseAddr(start)}
		if end != "" {
			i.end = netip.MustParseAddr(end)
		}
		return i
	}
	tests := []struct {
		outer, inner interval
		want         bool
	}{
		{iv("10.0.0.0", "10.1.0.0"), iv("10.0.1.0", "10.0.2.0"), true},
		{iv("10.0.0.0", "10.1.0.0"), iv("10.0.0.0", "10.1.0.0"), true},
		{iv("10.0.1.0", "10.0.2.0"), iv("10.0.0.0", "10.1.0.0"), false},
		{iv("10.0.0.0", "10.1.0.0"), iv("10.0.255.0", "10.1.1.0"), false},
		{iv("255.0.0.0", ""), iv("255.255.255.0", ""), true},
		{iv("255.0.0.0", "255.255.255.0"), iv("255.255.255.0", ""), false},
	}
	for _, tt := range tests {
		if got := tt.outer.containsInterval(tt.inner); got != tt.want {
			t.Errorf("%v contains %v = %v, want %v", tt.outer, tt.inner, got, tt.want)
		}
	}
}

func TestNftMasqRule(t *testing.T) {
	names := nftNetNames("mynet", false)
	src := &nftables.Set{Name: names.src, ID: 7}
	dst := &nftables.Set{Name: names.dst, ID: 8}
	r := nftMasqRule(nftFam(false), names, src, dst)
	if r.Table.Name != nftTableName || r.Table.Family != nftables.TableFamilyINet || r.Chain.Name != nftChainName {
		t.Errorf("rule placed in %s/%s", r.Table.Name, r.Chain.Name)
	}
	if c, _ := userdata.GetString(r.UserData, userdata.TypeComment); c != "nsnet-masq n4_11c844f9 net=mynet" {
		t.Errorf("rule comment = %q", c)
	}
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{2}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: "n4_11c844f9", SetID: 7},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: "s4_11c844f9", SetID: 8, Invert: true},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xf0, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{224, 0, 0, 0}},
		&expr.Masq{},
	}
	if len(r.Exprs) != len(want) {
		t.Fatalf("IPv4 rule has %d expressions, want %d", len(r.Exprs), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(r.Exprs[i], want[i]) {
			t.Errorf("IPv4 rule expression %d = %+v, want %+v", i, r.Exprs[i], want[i])
		}
	}
	if !nftRuleWellFormed(r, names) {
		t.Error("rendered rule is not recognised as well formed")
	}
	if nftRuleWellFormed(r, nftNetNames("other", false)) {
		t.Error("rule of another network is recognised as well formed")
	}

	names6 := nftNetNames("mynet", true)
	r6 := nftMasqRule(nftFam(true), names6, &nftables.Set{Name: names6.src}, &nftables.Set{Name: names6.dst})
	tail := r6.Exprs[len(r6.Exprs)-3:]
	want6 := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0xff}},
		&expr.Masq{},
	}
	for i := range want6 {
		if !reflect.DeepEqual(tail[i], want6[i]) {
			t.Errorf("IPv6 rule tail expression %d = %+v, want %+v", i, tail[i], want6[i])
		}
	}
	if cmp := r6.Exprs[1].(*expr.Cmp); cmp.Data[0] != 10 {
		t.Errorf("IPv6 rule checks nfproto %d, want 10", cmp.Data[0])
	}
	if p := r6.Exprs[2].(*expr.Payload); p.Offset != 8 || p.Len != 16 {
		t.Errorf("IPv6 saddr load %+v", p)
	}
}

func TestSplitIptLine(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{`-A X -j MASQUERADE`, []string{"-A", "X", "-j", "MASQUERADE"}},
		{`-A NSNET-MASQ -s 10.0.0.5/32 -m comment --comment "nsnet-masq subnet=10.0.0.0/24 net=a" -j NSNET-M-1`,
			[]string{"-A", "NSNET-MASQ", "-s", "10.0.0.5/32", "-m", "comment", "--comment", "nsnet-masq subnet=10.0.0.0/24 net=a", "-j", "NSNET-M-1"}},
		{`-A X -m comment --comment "say \"hi\" \\ there" -j RETURN`, []string{"-A", "X", "-m", "comment", "--comment", `say "hi" \ there`, "-j", "RETURN"}},
		{`-A X -m comment --comment "" -j RETURN`, []string{"-A", "X", "-m", "comment", "--comment", "", "-j", "RETURN"}},
		{`  -N   X  `, []string{"-N", "X"}},
	}
	for _, tt := range tests {
		if got := splitIptLine(tt.line); !slices.Equal(got, tt.want) {
			t.Errorf("splitIptLine(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func TestParseIptRules(t *testing.T) {
	e := entry{network: "mynet", ip: netip.MustParseAddr("10.88.0.5"), subnet: netip.MustParsePrefix("10.88.0.0/16")}
	lines := []string{
		"-N NSNET-MASQ",
		"-A NSNET-MASQ " + `-s 10.88.0.5/32 -m comment --comment "nsnet-masq subnet=10.88.0.0/16 net=mynet" -j NSNET-M-11c844f9`,
		"-A OTHER -j MASQUERADE",
	}
	rules := parseIptRules(lines, iptTopChain)
	if len(rules) != 1 {
		t.Fatalf("parseIptRules found %d rules, want 1", len(rules))
	}
	r := rules[0]
	if !slices.Equal(r.args, iptEntrySpec(e)) {
		t.Errorf("listed rule %q differs from the rendered spec %q", r.args, iptEntrySpec(e))
	}
	if r.src != netip.MustParsePrefix("10.88.0.5/32") || r.target != "NSNET-M-11c844f9" || r.comment != iptComment(e) {
		t.Errorf("parsed rule %+v", r)
	}
	subnet, network, ok := parseIptComment(r.comment)
	if !ok || subnet != e.subnet || network != "mynet" {
		t.Errorf("parseIptComment(%q) = %v %q %v", r.comment, subnet, network, ok)
	}
	for _, bad := range []string{"", "nsnet masquerade", "nsnet-masq subnet=x net=y", "nsnet-masq subnet=10.0.0.0/8"} {
		if _, _, ok := parseIptComment(bad); ok {
			t.Errorf("parseIptComment(%q) accepted", bad)
		}
	}

	chain := parseIptRules([]string{
		"-A C -d 10.88.0.0/16 -j RETURN",
		"-A C -d 224.0.0.0/4 -j RETURN",
		"-A C -s 10.0.0.0/8 -d 10.0.0.0/8 -j RETURN",
		"-A C -j MASQUERADE",
	}, "C")
	kinds := ""
	for _, r := range chain {
		switch {
		case r.isReturn():
			kinds += "R"
		case r.isMasquerade():
			kinds += "M"
		default:
			kinds += "?"
		}
	}
	if kinds != "RR?M" {
		t.Errorf("rule kinds = %s, want RR?M", kinds)
	}
}

func TestIptCommentLength(t *testing.T) {
	e := entry{network: strings.Repeat("n", 400), ip: netip.MustParseAddr("fd00::1"), subnet: netip.MustParsePrefix("fd00::/64")}
	c := iptComment(e)
	if len(c) > iptCommentMax {
		t.Fatalf("comment is %d bytes", len(c))
	}
	subnet, network, ok := parseIptComment(c)
	if !ok || subnet != e.subnet || !strings.HasSuffix(network, "...") {
		t.Errorf("parseIptComment(cut comment) = %v %q %v", subnet, network, ok)
	}
}

func TestUnknownBackend(t *testing.T) {
	if _, err := NewMasquerader("ebpf"); err == nil || !strings.Contains(err.Error(), "unknown masquerade backend") {
		t.Errorf("NewMasquerader(ebpf) error = %v", err)
	}
	if err := Available("ebpf"); err == nil {
		t.Error("Available(ebpf) = nil")
	}
}

func TestInvalidEntryTouchesNothing(t *testing.T) {
	// Validation runs before any socket or command, so this is safe outside a test netns.
	bad := MasqEntry{Network: "bad name", Subnet: mustCIDR(t, "10.0.0.1/24"), IP: net.ParseIP("10.0.0.1")}
	for _, m := range []Masquerader{&nftMasq{}, &iptMasq{}} {
		for op, f := range map[string]func(MasqEntry) error{"Add": m.Add, "Del": m.Del, "Check": m.Check} {
			if err := f(bad); err == nil || !strings.Contains(err.Error(), "invalid network name") {
				t.Errorf("%s %s(invalid) error = %v", m.Backend(), op, err)
			}
		}
		if _, err := m.Entries("bad name"); err == nil {
			t.Errorf("%s Entries(invalid) = nil error", m.Backend())
		}
	}
}
