package test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// TestPortmapScale ADDs many containers with three mappings each through the chain from
// parallel workers, checks a random sample is reachable from outside and that the nftables
// rules do not grow with the mappings (lookups go through maps), and DELs everything in
// parallel, leaving nothing behind. iptables runs fewer containers: every change execs
// iptables and its rules are linear.
func TestPortmapScale(t *testing.T) {
	cases := []struct {
		backend    string
		containers int
		x          int
	}{
		{"nftables", 100, 226},
		{"iptables", 30, 227},
	}
	for _, tc := range cases {
		t.Run(tc.backend, func(t *testing.T) {
			testPortmapScale(t, tc.backend, "pmscale-"+tc.backend[:3], tc.x, tc.containers)
		})
	}
}

// scaleMappings are container i's mappings: distinct host ports across containers.
func scaleMappings(i int) []portMapping {
	return []portMapping{tcpMap(10000+i, 80), udpMap(20000+i, 53), tcpMap(30000+i, 8080)}
}

// dnatLines counts the lines of the portmap table that mention dnat: its rules, not its
// map elements.
func dnatLines(table string) int {
	n := 0
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, "dnat") {
			n++
		}
	}
	return n
}

func testPortmapScale(t *testing.T, backend, bridge string, x, count int) {
	e := newPMEnv(t, "pmscale-"+backend, bridge, backend, x, false)
	cs := newContainers(t, e.host, count)
	pcs := make([]*pmContainer, count)
	id := func(i int) string { return fmt.Sprintf("scale-%03d", i) }

	// One container first, for the rule count of a single container's mappings.
	var err error
	if pcs[0], err = e.attach(t, cs[0], id(0), scaleMappings(0)...); err != nil {
		t.Fatal(err)
	}
	rulesOne := dnatLines(e.portmapTable(t))

	start := time.Now()
	errs := forEach(count-1, scaleWorkers, func(j int) (err error) {
		i := j + 1
		pcs[i], err = e.attach(t, cs[i], id(i), scaleMappings(i)...)
		return err
	})
	t.Logf("%d chain ADDs (%d mappings) with %d workers took %s", count-1, 3*(count-1), scaleWorkers, time.Since(start).Round(time.Millisecond))
	reportErrors(t, "parallel ADD", errs)

	if got := len(e.records(t)); got != count {
		t.Errorf("portmap-lite holds %d records, want %d", got, count)
	}
	v4, _ := e.published(t)
	for i, pc := range pcs {
		for _, m := range scaleMappings(i) {
			if !publishesPort(v4, m.HostPort) {
				t.Errorf("container %d: %s %d is not published", i, m.Protocol, m.HostPort)
			}
		}
		if !mentionsIPv4(v4, pc.ip4) {
			t.Errorf("container %d: no mapping leads to its address %s", i, pc.ip4)
		}
	}
	if backend == "nftables" {
		if rulesAll := dnatLines(e.portmapTable(t)); rulesAll != rulesOne {
			t.Errorf("table inet nsnet-portmap has %d dnat lines with %d mappings, %d with 3", rulesAll, 3*count, rulesOne)
		}
	}

	for _, i := range rand.Perm(count)[:5] {
		harness.StartWhoami(t, pcs[i].ns, "tcp4", 80)
		assertWhoami(t, fmt.Sprintf("outside -> host:%d -> container %d", 10000+i, i),
			e.host.Ext, "tcp4", hostPort(10000+i), harness.ExtUplinkIP)
	}

	start = time.Now()
	errs = forEach(count, scaleWorkers, func(i int) error { return e.del(pcs[i]) })
	t.Logf("%d chain DELs with %d workers took %s", count, scaleWorkers, time.Since(start).Round(time.Millisecond))
	reportErrors(t, "parallel DEL", errs)
	e.assertNoLeftovers(t, cs...)
}
