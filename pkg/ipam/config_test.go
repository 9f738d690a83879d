package ipam

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// rangeStr renders a parsed range as "subnet start-end gw".
func rangeStr(r ipRange) string {
	return r.subnet.String() + " " + r.start.String() + "-" + r.end.String() + " gw " + r.gateway.String()
}

func setsStr(sets []rangeSet) [][]string {
	var out [][]string
	for _, s := range sets {
		var rs []string
		for _, r := range s {
			rs = append(rs, rangeStr(r))
		}
		out = append(out, rs)
	}
	return out
}

func TestParseHostLocal(t *testing.T) {
	const dd = "/data"
	tests := []struct {
		name      string
		stdin     string
		network   string
		args      string
		wantSets  [][]string
		wantReq   []string
		wantDir   string
		wantRoute int
	}{
		{
			name:     "single range defaults",
			stdin:    string(hlConf(dd, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`, "")),
			wantSets: [][]string{{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}},
			wantDir:  "/data/net1",
		},
		{
			name:     "default dataDir",
			stdin:    `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`,
			wantSets: [][]string{{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}},
			wantDir:  "/var/lib/cni/networks/n",
		},
		{
			name:     "Request.Network overrides name",
			stdin:    string(hlConf(dd, `"subnet":"10.1.0.0/24"`, "")),
			network:  "old",
			wantSets: [][]string{{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}},
			wantDir:  "/data/old",
		},
		{
			name:  "legacy keys go in front of ranges",
			stdin: string(hlConf(dd, `"subnet":"10.2.0.0/16","rangeStart":"10.2.1.10","rangeEnd":"10.2.1.20","gateway":"10.2.0.254","ranges":[[{"subnet":"10.1.0.0/24"}]]`, "")),
			wantSets: [][]string{
				{"10.2.0.0/16 10.2.1.10-10.2.1.20 gw 10.2.0.254"},
				{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"},
			},
			wantDir: "/data/net1",
		},
		{
			name:  "dual stack",
			stdin: string(hlConf(dd, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00:1::/64","gateway":"fd00:1::fe"}]]`, "")),
			wantSets: [][]string{
				{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"},
				{"fd00:1::/64 fd00:1::1-fd00:1::ffff:ffff:ffff:ffff gw fd00:1::fe"},
			},
			wantDir: "/data/net1",
		},
		{
			name:  "pool of two subnets",
			stdin: string(hlConf(dd, `"ranges":[[{"subnet":"10.1.0.0/30"},{"subnet":"10.2.0.0/30","rangeStart":"10.2.0.2"}]]`, "")),
			wantSets: [][]string{{
				"10.1.0.0/30 10.1.0.1-10.1.0.2 gw 10.1.0.1",
				"10.2.0.0/30 10.2.0.2-10.2.0.2 gw 10.2.0.1",
			}},
			wantDir: "/data/net1",
		},
		{
			name:     "smallest allowed subnets",
			stdin:    string(hlConf(dd, `"ranges":[[{"subnet":"10.1.0.0/30"}],[{"subnet":"fd00::/126"}]]`, "")),
			wantSets: [][]string{{"10.1.0.0/30 10.1.0.1-10.1.0.2 gw 10.1.0.1"}, {"fd00::/126 fd00::1-fd00::3 gw fd00::1"}},
			wantDir:  "/data/net1",
		},
		{
			name:  "runtimeConfig.ipRanges in front",
			stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24","ranges":[[{"subnet":"10.3.0.0/24"}]]`, `"runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/24"}]]}`)),
			wantSets: [][]string{
				{"10.9.0.0/24 10.9.0.1-10.9.0.254 gw 10.9.0.1"},
				{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"},
				{"10.3.0.0/24 10.3.0.1-10.3.0.254 gw 10.3.0.1"},
			},
			wantDir: "/data/net1",
		},
		{
			name: "requested IPs from CNI_ARGS, args and runtimeConfig",
			stdin: string(hlConf(dd, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`,
				`"args":{"cni":{"ips":["fd00::7/64"]}},"runtimeConfig":{"ips":["10.1.0.8"]}`)),
			args:     "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.5,fd00::5/64;",
			wantSets: [][]string{{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}, {"fd00::/64 fd00::1-fd00::ffff:ffff:ffff:ffff gw fd00::1"}},
			wantReq:  []string{"10.1.0.5", "fd00::5", "fd00::7", "10.1.0.8"},
			wantDir:  "/data/net1",
		},
		{
			name:      "routes",
			stdin:     string(hlConf(dd, `"subnet":"10.1.0.0/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.1.0.254"}]`, "")),
			wantSets:  [][]string{{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}},
			wantDir:   "/data/net1",
			wantRoute: 2,
		},
		{
			name:     "two v4 sets allowed from 0.3.0",
			stdin:    `{"cniVersion":"0.3.0","name":"n","ipam":{"type":"host-local","dataDir":"/data","ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`,
			wantSets: [][]string{{"10.1.0.0/24 10.1.0.1-10.1.0.254 gw 10.1.0.1"}, {"10.2.0.0/24 10.2.0.1-10.2.0.254 gw 10.2.0.1"}},
			wantDir:  "/data/n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseHostLocal([]byte(tt.stdin), tt.network, tt.args)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := setsStr(c.sets); !slices.EqualFunc(got, tt.wantSets, slices.Equal) {
				t.Errorf("sets = %q, want %q", got, tt.wantSets)
			}
			var req []string
			for _, a := range c.requested {
				req = append(req, a.String())
			}
			if !slices.Equal(req, tt.wantReq) {
				t.Errorf("requested = %q, want %q", req, tt.wantReq)
			}
			if c.dir != filepath.FromSlash(tt.wantDir) {
				t.Errorf("dir = %s, want %s", c.dir, tt.wantDir)
			}
			if len(c.routes) != tt.wantRoute {
				t.Errorf("%d routes, want %d", len(c.routes), tt.wantRoute)
			}
		})
	}
}

func TestParseHostLocalErrors(t *testing.T) {
	const dd = "/data"
	ranges := func(r string) string { return string(hlConf(dd, `"ranges":`+r, "")) }
	tests := []struct {
		name    string
		stdin   string
		network string
		args    string
		code    uint
		msg     string
	}{
		{name: "bad JSON", stdin: `{"ipam":`, code: types.ErrDecodingFailure, msg: "decoding"},
		{name: "wrong JSON type", stdin: `{"name":"n","ipam":{"ranges":"x"}}`, code: types.ErrDecodingFailure},
		{name: "no ipam", stdin: `{"name":"n"}`, code: types.ErrInvalidNetworkConfig, msg: `no "ipam"`},
		{name: "no name", stdin: `{"ipam":{"subnet":"10.1.0.0/24"}}`, code: types.ErrInvalidNetworkConfig, msg: `no "name"`},
		{name: "name escapes data dir", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24"`, "")), network: "../etc", code: types.ErrInvalidNetworkConfig, msg: "cannot name a directory"},
		{name: "no ranges", stdin: string(hlConf(dd, "", "")), code: types.ErrInvalidNetworkConfig, msg: "no IP ranges"},
		{name: "empty range set", stdin: ranges(`[[]]`), code: types.ErrInvalidNetworkConfig, msg: "empty range set"},
		{name: "range without subnet", stdin: ranges(`[[{"rangeStart":"10.1.0.1"}]]`), code: types.ErrInvalidNetworkConfig, msg: `no "subnet"`},
		{name: "subnet not CIDR", stdin: ranges(`[[{"subnet":"10.1.0.0"}]]`), code: types.ErrInvalidNetworkConfig, msg: "not a CIDR"},
		{name: "host bits set", stdin: ranges(`[[{"subnet":"10.1.0.5/24"}]]`), code: types.ErrInvalidNetworkConfig, msg: "host bits set; for a /24 the network address is 10.1.0.0"},
		{name: "v6 host bits set", stdin: ranges(`[[{"subnet":"fd00::1/64"}]]`), code: types.ErrInvalidNetworkConfig, msg: "host bits"},
		{name: "/31", stdin: ranges(`[[{"subnet":"10.1.0.0/31"}]]`), code: types.ErrInvalidNetworkConfig, msg: "too small"},
		{name: "/32", stdin: ranges(`[[{"subnet":"10.1.0.1/32"}]]`), code: types.ErrInvalidNetworkConfig, msg: "too small"},
		{name: "/127", stdin: ranges(`[[{"subnet":"fd00::/127"}]]`), code: types.ErrInvalidNetworkConfig, msg: "too small"},
		{name: "/128", stdin: ranges(`[[{"subnet":"fd00::1/128"}]]`), code: types.ErrInvalidNetworkConfig, msg: "too small"},
		{name: "mapped subnet", stdin: ranges(`[[{"subnet":"::ffff:10.1.0.0/120"}]]`), code: types.ErrInvalidNetworkConfig, msg: "IPv4-mapped"},
		{name: "rangeStart outside", stdin: ranges(`[[{"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}]]`), code: types.ErrInvalidNetworkConfig, msg: "rangeStart 10.2.0.1 is not in subnet"},
		{name: "rangeEnd outside", stdin: ranges(`[[{"subnet":"10.1.0.0/24","rangeEnd":"10.1.1.1"}]]`), code: types.ErrInvalidNetworkConfig, msg: "rangeEnd 10.1.1.1 is not in subnet"},
		{name: "rangeStart after rangeEnd", stdin: ranges(`[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.8"}]]`), code: types.ErrInvalidNetworkConfig, msg: "is after rangeEnd"},
		{name: "gateway outside", stdin: ranges(`[[{"subnet":"10.1.0.0/24","gateway":"10.9.0.1"}]]`), code: types.ErrInvalidNetworkConfig, msg: "gateway 10.9.0.1 is not in subnet"},
		{name: "bad gateway", stdin: ranges(`[[{"subnet":"10.1.0.0/24","gateway":"x"}]]`), code: types.ErrInvalidNetworkConfig, msg: "not an IP address"},
		{name: "overlapping sets", stdin: ranges(`[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/16"}]]`), code: types.ErrInvalidNetworkConfig, msg: "range set 1 (10.1.0.0/16) overlaps range set 0"},
		{name: "overlapping ranges in a set", stdin: ranges(`[[{"subnet":"10.1.0.0/24","rangeEnd":"10.1.0.100"},{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.100"}]]`), code: types.ErrInvalidNetworkConfig, msg: "overlap"},
		{name: "mixed families in a set", stdin: ranges(`[[{"subnet":"10.1.0.0/24"},{"subnet":"fd00::/64"}]]`), code: types.ErrInvalidNetworkConfig, msg: "mix address families"},
		{name: "ipRanges overlap config", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24"`, `"runtimeConfig":{"ipRanges":[[{"subnet":"10.1.0.0/25"}]]}`)), code: types.ErrInvalidNetworkConfig, msg: "overlaps"},
		{name: "two v4 sets before 0.3.0", stdin: `{"cniVersion":"0.2.0","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/24"}]]}}`, code: types.ErrInvalidNetworkConfig, msg: "one address per family"},
		{name: "route without dst", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24","routes":[{"gw":"10.1.0.1"}]`, "")), code: types.ErrInvalidNetworkConfig, msg: "route 0 has no dst"},
		{name: "bad runtimeConfig ip", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24"`, `"runtimeConfig":{"ips":["10.1.0.x"]}`)), code: types.ErrInvalidNetworkConfig, msg: `"10.1.0.x"`},
		{name: "bad args ip", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24"`, `"args":{"cni":{"ips":["10.1.0.1/x"]}}`)), code: types.ErrInvalidNetworkConfig, msg: "not an address or CIDR"},
		{name: "bad CNI_ARGS ip", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24"`, "")), args: "IP=nope", code: types.ErrInvalidEnvironmentVariables, msg: "CNI_ARGS"},
		{name: "CNI_ARGS pair without =", stdin: string(hlConf(dd, `"subnet":"10.1.0.0/24"`, "")), args: "IP", code: types.ErrInvalidEnvironmentVariables, msg: "invalid pair"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseHostLocal([]byte(tt.stdin), tt.network, tt.args)
			if got := errCode(err); got != tt.code {
				t.Fatalf("error %v: code %d, want %d", err, got, tt.code)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
}

func TestAssignRequested(t *testing.T) {
	dual := `"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.0"}],[{"subnet":"fd00::/64"}]]`
	tests := []struct {
		name  string
		args  string
		want  []string // per set, "" for none
		error string
	}{
		{name: "none", want: []string{"", ""}},
		{name: "one per family", args: "IP=fd00::9,10.1.0.9", want: []string{"10.1.0.9", "fd00::9"}},
		{name: "duplicate collapses", args: "IP=10.1.0.9,10.1.0.9/24", want: []string{"10.1.0.9", ""}},
		{name: "outside every range", args: "IP=10.2.0.9", error: "requested IP 10.2.0.9 is not in any configured range"},
		{name: "gateway", args: "IP=10.1.0.1", error: "requested IP 10.1.0.1 is the gateway"},
		{name: "network address", args: "IP=10.1.0.0", error: "network or broadcast"},
		{name: "two in one set", args: "IP=10.1.0.9,10.1.0.10", error: "requested IPs 10.1.0.9 and 10.1.0.10 both fall in range set 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseHostLocal(hlConf("/d", dual, ""), "", tt.args)
			if err != nil {
				t.Fatal(err)
			}
			per, err := c.assignRequested()
			if tt.error != "" {
				if errCode(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("error %v, want code 7 mentioning %q", err, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range per {
				if a.IsValid() {
					got = append(got, a.String())
				} else {
					got = append(got, "")
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	seeds := []string{
		string(hlConf("/d", `"subnet":"10.1.0.0/24"`, "")),
		string(hlConf("/d", `"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20","gateway":"10.1.0.1"}],[{"subnet":"fd00::/64"}]]`, `"runtimeConfig":{"ips":["10.1.0.11/24"],"ipRanges":[[{"subnet":"192.168.0.0/30"}]]},"args":{"cni":{"ips":["fd00::3"]}}`)),
		string(hlConf("/d", `"ranges":[[{"subnet":"10.1.0.0/30"},{"subnet":"10.2.0.0/30"}]],"routes":[{"dst":"0.0.0.0/0"}]`, "")),
		`{"name":"n","ipam":{"subnet":"::ffff:1.2.3.0/120"}}`,
		`{"name":"n","ipam":{}}`,
		`{}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), "IP=10.1.0.5")
	}
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		c, err := parseHostLocal(stdin, "", args)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || (e.Code != 4 && e.Code != 6 && e.Code != 7) {
				t.Fatalf("untyped or unexpected error %#v", err)
			}
			return
		}
		if len(c.sets) == 0 {
			t.Fatal("accepted a config without range sets")
		}
		for i, s := range c.sets {
			for k := range s {
				r := &s[k]
				if r.start.Compare(r.end) > 0 || !r.subnet.Contains(r.start) || !r.subnet.Contains(r.end) || !r.subnet.Contains(r.gateway) {
					t.Fatalf("set %d range %s is inconsistent", i, rangeStr(*r))
				}
				if r.subnet.Masked() != r.subnet || r.start.BitLen() != s[0].start.BitLen() {
					t.Fatalf("set %d range %s: bad subnet or family", i, rangeStr(*r))
				}
			}
			for k := range i {
				if c.sets[k].overlaps(s) {
					t.Fatalf("sets %d and %d overlap", k, i)
				}
			}
			// The walk must stay inside the set and avoid reserved addresses.
			n := 0
			_, _ = s.walk(t.Context(), netip.Addr{}, func(a netip.Addr, r *ipRange) (bool, error) {
				if !r.contains(a) || r.reserved(a) {
					t.Fatalf("walk offered %s outside %s", a, rangeStr(*r))
				}
				n++
				return n == 64, nil
			})
		}
		_, _ = c.assignRequested()
	})
}
