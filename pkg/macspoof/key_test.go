package macspoof

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

func mustMAC(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestKeys(t *testing.T) {
	mac := mustMAC(t, "02:42:ac:11:00:02")
	tests := []struct {
		name    string
		ifname  []byte
		allowed []byte
	}{
		{
			name:    "veth1234",
			ifname:  []byte("veth1234\x00\x00\x00\x00\x00\x00\x00\x00"),
			allowed: []byte("veth1234\x00\x00\x00\x00\x00\x00\x00\x00\x02\x42\xac\x11\x00\x02\x00\x00"),
		},
		{
			name:    "a",
			ifname:  []byte("a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
			allowed: []byte("a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x42\xac\x11\x00\x02\x00\x00"),
		},
		{
			name:    "veth0123456789a", // 15 bytes: the longest name, still NUL-terminated
			ifname:  []byte("veth0123456789a\x00"),
			allowed: []byte("veth0123456789a\x00\x02\x42\xac\x11\x00\x02\x00\x00"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validName(tt.name); err != nil {
				t.Fatal(err)
			}
			if got := ifnameKey(tt.name); !bytes.Equal(got, tt.ifname) {
				t.Errorf("ifnameKey = %q, want %q", got, tt.ifname)
			}
			if got := allowedKey(tt.name, mac); !bytes.Equal(got, tt.allowed) {
				t.Errorf("allowedKey = %q, want %q", got, tt.allowed)
			}
			if n, err := parseIfname(tt.ifname); err != nil || n != tt.name {
				t.Errorf("parseIfname = %q, %v; want %q", n, err, tt.name)
			}
			n, m, err := parseAllowed(tt.allowed)
			if err != nil || n != tt.name || !bytes.Equal(m, mac) {
				t.Errorf("parseAllowed = %q, %s, %v; want %q, %s", n, m, err, tt.name, mac)
			}
		})
	}
}

// The key length must match what the kernel derives from the set's type,
// or adding elements fails with EINVAL.
func TestAllowedKeyMatchesSetType(t *testing.T) {
	if got := newRuleset().allowed.KeyType.Bytes; got != allowedKeyLen {
		t.Fatalf("allowed set key is %d bytes, encoder writes %d", got, allowedKeyLen)
	}
	if got := newRuleset().ports.KeyType.Bytes; got != ifnameLen {
		t.Fatalf("ports set key is %d bytes, encoder writes %d", got, ifnameLen)
	}
}

func TestRuleRegisters(t *testing.T) {
	rs := newRuleset()
	r := rs.rule()
	meta := r.Exprs[0].(*expr.Meta)
	pl := r.Exprs[2].(*expr.Payload)
	lookup := r.Exprs[3].(*expr.Lookup)
	// 32-bit registers are 4 bytes; the MAC must start right after the name.
	if pl.DestRegister != meta.Register+ifnameLen/4 {
		t.Errorf("MAC loaded into register %d, want %d", pl.DestRegister, meta.Register+ifnameLen/4)
	}
	if lookup.SourceRegister != meta.Register || !lookup.Invert || lookup.SetName != allowedName {
		t.Errorf("allowed lookup = %+v", lookup)
	}
	if !isOurRule(r) {
		t.Error("rule does not carry our tag")
	}
}

func TestValidation(t *testing.T) {
	for _, name := range []string{"", "veth0123456789ab", "a\x00b"} {
		if validName(name) == nil {
			t.Errorf("validName(%q) accepted it", name)
		}
	}
	for _, mac := range []net.HardwareAddr{nil, {1, 2, 3}, make(net.HardwareAddr, 20)} {
		if validMAC(mac) == nil {
			t.Errorf("validMAC(%v) accepted it", mac)
		}
	}
	if _, _, err := parseAllowed(make([]byte, 16)); err == nil {
		t.Error("parseAllowed accepted a short key")
	}
	if _, err := parseIfname(make([]byte, 24)); err == nil {
		t.Error("parseIfname accepted a long key")
	}
}

func TestSetProblems(t *testing.T) {
	mac := mustMAC(t, "02:00:00:00:00:01")
	other := mustMAC(t, "02:00:00:00:00:02")
	full := func() *setsState {
		return &setsState{hasPorts: true, hasAllowed: true, ports: []string{"h1", "h2"},
			allowed: []guard{{"h1", mac}, {"h2", other}}}
	}
	tests := []struct {
		name   string
		mutate func(*setsState)
		want   []string
	}{
		{"guarded", func(*setsState) {}, nil},
		{"no ports set", func(s *setsState) { s.hasPorts, s.ports = false, nil }, []string{"set ports is missing"}},
		{"not a port", func(s *setsState) { s.ports = []string{"h2"} }, []string{"set ports lacks h1"}},
		{"no allowed set", func(s *setsState) { s.hasAllowed, s.allowed = false, nil }, []string{"set allowed is missing"}},
		{"wrong MAC", func(s *setsState) { s.allowed[0].mac = other }, []string{"also allows 02:00:00:00:00:02", "lacks h1 . 02:00:00:00:00:01"}},
		{"extra MAC", func(s *setsState) { s.allowed = append(s.allowed, guard{"h1", other}) }, []string{"also allows 02:00:00:00:00:02 from h1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := full()
			tt.mutate(st)
			err := errors.Join(setProblems(st, "h1", mac)...)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected problems: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no problems, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems %q lack %q", err, w)
				}
			}
		})
	}
}

func TestChainProblems(t *testing.T) {
	rs := newRuleset()
	ours := rs.rule()
	foreign := &nftables.Rule{}
	tests := []struct {
		name  string
		chain *nftables.Chain
		rules []*nftables.Rule
		want  string
	}{
		{"fine", rs.chain, []*nftables.Rule{ours}, ""},
		{"missing", nil, nil, "chain prerouting is missing"},
		{"flushed", rs.chain, nil, "has 0 rules"},
		{"duplicated", rs.chain, []*nftables.Rule{ours, ours}, "has 2 rules, 2 of them ours"},
		{"foreign rule", rs.chain, []*nftables.Rule{ours, foreign}, "has 2 rules, 1 of them ours"},
		{"wrong hook", func() *nftables.Chain {
			c := *rs.chain
			h := nftables.ChainHook(1)
			c.Hooknum = &h
			return &c
		}(), []*nftables.Rule{ours}, "not a filter chain on hook prerouting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := errors.Join(chainProblems(tt.chain, tt.rules)...)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected problems: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("problems = %v, want %q", err, tt.want)
			}
		})
	}
}
