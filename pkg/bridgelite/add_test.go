package bridgelite

import (
	"net"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func ipc(cidr, gw string) *current.IPConfig {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return &current.IPConfig{Address: *n, Gateway: net.ParseIP(gw)}
}

func TestGatewaysAndDefaultRoutes(t *testing.T) {
	tests := []struct {
		name       string
		isGateway  bool
		ips        []*current.IPConfig
		routes     []*types.Route
		want4      string
		want6      string
		wantRoutes int
	}{
		{name: "ipam gateways", ips: []*current.IPConfig{ipc("10.1.0.5/24", "10.1.0.1"), ipc("fd00::5/64", "fd00::1")}, want4: "10.1.0.1", want6: "fd00::1", wantRoutes: 2},
		{name: "computed when bridge is gateway", isGateway: true, ips: []*current.IPConfig{ipc("10.1.0.5/24", "")}, want4: "10.1.0.1", wantRoutes: 1},
		{name: "none without isGateway", ips: []*current.IPConfig{ipc("10.1.0.5/24", "")}, wantRoutes: 0},
		{
			name:       "ipam default route with gw is kept",
			ips:        []*current.IPConfig{ipc("10.1.0.5/24", "10.1.0.1")},
			routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP("10.1.0.254")}},
			want4:      "10.1.0.1",
			wantRoutes: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Conf{IsGateway: tt.isGateway}
			res := &current.Result{IPs: tt.ips, Routes: tt.routes}
			gw4, gw6 := gateways(c, res)
			if (gw4 == nil && tt.want4 != "") || (gw4 != nil && gw4.String() != tt.want4) {
				t.Errorf("gw4 = %v, want %q", gw4, tt.want4)
			}
			if (gw6 == nil && tt.want6 != "") || (gw6 != nil && gw6.String() != tt.want6) {
				t.Errorf("gw6 = %v, want %q", gw6, tt.want6)
			}
			routes := addDefaultRoutes(res.Routes, gw4, gw6)
			if len(routes) != tt.wantRoutes {
				t.Errorf("routes = %v, want %d", routes, tt.wantRoutes)
			}
		})
	}
}

func TestMasqEntries(t *testing.T) {
	got := masqEntries([]*current.IPConfig{ipc("10.1.0.5/24", ""), ipc("fd00::5/64", "")})
	if len(got) != 2 || got[0].Subnet != "10.1.0.0/24" || got[0].IP != "10.1.0.5" || got[1].Subnet != "fd00::/64" {
		t.Fatalf("entries = %+v", got)
	}
}
