package test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// whoamiPort is where the "outside world" (host.Ext) answers with the source address it sees.
const whoamiPort = 8000

// TestBridgeLiteConnectivity attaches two containers and checks every path a bridge network
// promises: container and gateway both ways, container to container, and container to the
// outside through masquerade, which must hide the container address behind the host's uplink.
func TestBridgeLiteConnectivity(t *testing.T) {
	for i, backend := range masqBackends {
		t.Run(backend, func(t *testing.T) {
			x := 170 + i
			testConnectivity(t, backend, fmt.Sprintf("blconn-%s", backend[:3]), x)
		})
	}
}

func testConnectivity(t *testing.T, backend, bridge string, x int) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	subnet := fmt.Sprintf("10.%d.0.0/24", x)
	gw := fmt.Sprintf("10.%d.0.1", x)
	n := newLiteNet(t, bins, "conn-"+backend, bridge, backend, fmt.Sprintf(`"subnet": %q`, subnet))
	list := harness.ConfList(t, n.conflist())
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)
	ext := harness.StartWhoami(t, host.Ext, "tcp4", whoamiPort)

	cs := []*harness.NetNS{host.NewContainer(t), host.NewContainer(t)}
	ips := make([]string, len(cs))
	for i, c := range cs {
		att := harness.Attachment(c, fmt.Sprintf("conn-%s-%d", backend, i), "eth0")
		raw, err := rt.Add(list, att)
		if err != nil {
			t.Fatalf("ADD container %d: %v", i, err)
		}
		t.Cleanup(func() { _ = rt.Del(list, att) })
		res, err := types100.NewResultFromResult(raw)
		if err != nil {
			t.Fatalf("converting ADD result: %v", err)
		}
		if ips[i], err = singleIPv4(res, mustCIDR(t, subnet)); err != nil {
			t.Fatalf("ADD container %d: %v", i, err)
		}
		if ips[i] == gw {
			t.Fatalf("container %d got the gateway address %s", i, gw)
		}
		if got := res.IPs[0].Gateway.String(); got != gw {
			t.Errorf("container %d: gateway %s, want %s", i, got, gw)
		}
	}
	if ips[0] == ips[1] {
		t.Fatalf("both containers got %s", ips[0])
	}

	pings := []struct {
		from *harness.NetNS
		to   string
		what string
	}{
		{cs[0], gw, "container 0 -> gateway"},
		{cs[1], gw, "container 1 -> gateway"},
		{host.NetNS, ips[0], "gateway (host) -> container 0"},
		{host.NetNS, ips[1], "gateway (host) -> container 1"},
		{cs[0], ips[1], "container 0 -> container 1"},
		{cs[1], ips[0], "container 1 -> container 0"},
	}
	for _, p := range pings {
		if err := harness.Ping(t, p.from, p.to); err != nil {
			t.Errorf("%s: %v", p.what, err)
		}
	}

	assertMasqueraded(t, host, backend, ips...)
	for i, c := range cs {
		seen, err := harness.AskWhoami(c, "tcp4", fmt.Sprintf("%s:%d", harness.ExtUplinkIP, whoamiPort))
		if err != nil {
			t.Errorf("container %d -> outside: %v", i, err)
			continue
		}
		if seen != harness.HostUplinkIP {
			t.Errorf("container %d -> outside: the outside saw %s, want the host's uplink address %s (container is %s)",
				i, seen, harness.HostUplinkIP, ips[i])
		}
	}
	if err := ext.Stop(); err != nil {
		t.Error(err)
	}

	for i, c := range cs {
		if err := rt.Del(list, harness.Attachment(c, fmt.Sprintf("conn-%s-%d", backend, i), "eth0")); err != nil {
			t.Errorf("DEL container %d: %v", i, err)
		}
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(cs...))
}

// TestBridgeLiteDualStack checks that an IPv4+IPv6 network gives each container one address of
// each family and that IPv6 works as soon as ADD returns: no address of the container or the
// gateway may still be doing duplicate address detection.
func TestBridgeLiteDualStack(t *testing.T) {
	for i, backend := range masqBackends {
		t.Run(backend, func(t *testing.T) {
			x := 172 + i
			testDualStack(t, backend, fmt.Sprintf("bldual-%s", backend[:3]), x)
		})
	}
}

func testDualStack(t *testing.T, backend, bridge string, x int) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	sub4, sub6 := fmt.Sprintf("10.%d.0.0/24", x), fmt.Sprintf("fd00:%d::/64", x)
	gw4, gw6 := fmt.Sprintf("10.%d.0.1", x), fmt.Sprintf("fd00:%d::1", x)
	ranges := fmt.Sprintf(`"ranges": [[{"subnet": %q}], [{"subnet": %q}]]`, sub4, sub6)
	n := newLiteNet(t, bins, "dual-"+backend, bridge, backend, ranges)
	list := harness.ConfList(t, n.conflist())
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)

	cs := []*harness.NetNS{host.NewContainer(t), host.NewContainer(t)}
	v4s, v6s := make([]string, len(cs)), make([]string, len(cs))
	for i, c := range cs {
		att := harness.Attachment(c, fmt.Sprintf("dual-%s-%d", backend, i), "eth0")
		start := time.Now()
		raw, err := rt.Add(list, att)
		if err != nil {
			t.Fatalf("ADD container %d: %v", i, err)
		}
		t.Logf("ADD container %d took %s", i, time.Since(start).Round(time.Millisecond))
		t.Cleanup(func() { _ = rt.Del(list, att) })
		res, err := types100.NewResultFromResult(raw)
		if err != nil {
			t.Fatalf("converting ADD result: %v", err)
		}
		v4, v6 := resultAddrs(res)
		if len(v4) != 1 || len(v6) != 1 {
			t.Fatalf("container %d: got IPv4 %v and IPv6 %v, want one of each", i, v4, v6)
		}
		v4s[i], v6s[i] = v4[0], v6[0]
		for _, ipc := range res.IPs {
			want, sub := gw4, sub4
			if ipc.Address.IP.To4() == nil {
				want, sub = gw6, sub6
			}
			if !mustCIDR(t, sub).Contains(ipc.Address.IP) {
				t.Errorf("container %d: %s is outside %s", i, ipc.Address.IP, sub)
			}
			if ipc.Gateway.String() != want {
				t.Errorf("container %d: gateway of %s is %s, want %s", i, ipc.Address.IP, ipc.Gateway, want)
			}
		}
		// Right after ADD, before anything had time to settle.
		if tent := tentativeAddrs(t, c, "eth0"); len(tent) > 0 {
			t.Errorf("container %d: addresses still tentative right after ADD: %v", i, tent)
		}
		if tent := tentativeAddrs(t, host.NetNS, bridge); len(tent) > 0 {
			t.Errorf("bridge addresses tentative right after ADD %d: %v", i, tent)
		}
	}
	if v4s[0] == v4s[1] || v6s[0] == v6s[1] {
		t.Fatalf("containers share an address: %v %v", v4s, v6s)
	}

	pings := []struct {
		from *harness.NetNS
		to   string
		what string
	}{
		{cs[1], gw6, "container 1 -> IPv6 gateway"},
		{cs[0], gw6, "container 0 -> IPv6 gateway"},
		{cs[0], v6s[1], "container 0 -> container 1 (IPv6)"},
		{cs[1], v6s[0], "container 1 -> container 0 (IPv6)"},
		{host.NetNS, v6s[0], "gateway (host) -> container 0 (IPv6)"},
		{cs[0], v4s[1], "container 0 -> container 1 (IPv4)"},
		{cs[1], gw4, "container 1 -> IPv4 gateway"},
	}
	for _, p := range pings {
		if err := harness.Ping(t, p.from, p.to); err != nil {
			t.Errorf("%s: %v", p.what, err)
		}
	}
	assertMasqueraded(t, host, backend, slices.Concat(v4s, v6s)...)

	for i, c := range cs {
		if err := rt.Del(list, harness.Attachment(c, fmt.Sprintf("dual-%s-%d", backend, i), "eth0")); err != nil {
			t.Errorf("DEL container %d: %v", i, err)
		}
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(cs...))
}
