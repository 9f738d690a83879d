package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// scaleWorkers is how many plugin calls (or pings) run at once, like a busy node's runtime.
const scaleWorkers = 8

// TestBridgeLiteScale ADDs many containers to one network from parallel workers, checks that
// every one got its own address and is reachable, and DELs them all again in parallel, leaving
// nothing behind. iptables runs fewer containers: every masquerade change execs iptables.
func TestBridgeLiteScale(t *testing.T) {
	cases := []struct {
		backend    string
		containers int
		x          int
	}{
		{"nftables", 200, 175},
		{"iptables", 60, 176},
	}
	for _, tc := range cases {
		t.Run(tc.backend, func(t *testing.T) {
			testScale(t, tc.backend, "blscale-"+tc.backend[:3], tc.x, tc.containers)
		})
	}
}

func testScale(t *testing.T, backend, bridge string, x, count int) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	subnet := fmt.Sprintf("10.%d.0.0/16", x)
	n := newLiteNet(t, bins, "scale-"+backend, bridge, backend, fmt.Sprintf(`"subnet": %q`, subnet))
	cs := newContainers(t, host, count)
	id := func(i int) string { return fmt.Sprintf("scale-%s-%03d", backend, i) }

	ips := make([]string, count)
	start := time.Now()
	errs := forEach(count, scaleWorkers, func(i int) error {
		res, err := n.add(t, host, cs[i], id(i))
		if err != nil {
			return err
		}
		ips[i], err = singleIPv4(res, mustCIDR(t, subnet))
		if err != nil {
			return fmt.Errorf("ADD %s: %w", id(i), err)
		}
		return nil
	})
	t.Logf("%d ADDs with %d workers took %s", count, scaleWorkers, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		forEach(count, scaleWorkers, func(i int) error { return n.del(t, host, cs[i], id(i)) })
	})
	reportErrors(t, "parallel ADD", errs)

	owner := map[string]int{}
	for i, ip := range ips {
		if j, dup := owner[ip]; dup {
			t.Errorf("containers %d and %d both got %s", j, i, ip)
		}
		owner[ip] = i
	}
	if len(owner) != count {
		t.Fatalf("%d distinct addresses for %d containers", len(owner), count)
	}
	if i, taken := owner[fmt.Sprintf("10.%d.0.1", x)]; taken {
		t.Errorf("container %d got the gateway address %s", i, ips[i])
	}

	start = time.Now()
	errs = forEach(count, scaleWorkers, func(i int) error { return harness.Ping(t, host.NetNS, ips[i]) })
	t.Logf("pinging %d containers from the host took %s", count, time.Since(start).Round(time.Millisecond))
	reportErrors(t, "pinging every container from the host", errs)
	// The shared masquerade structures must hold every container, not just the last writers.
	assertMasqueraded(t, host, backend, ips...)

	start = time.Now()
	errs = forEach(count, scaleWorkers, func(i int) error { return n.del(t, host, cs[i], id(i)) })
	t.Logf("%d DELs with %d workers took %s", count, scaleWorkers, time.Since(start).Round(time.Millisecond))
	reportErrors(t, "parallel DEL", errs)
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(cs...))
}
