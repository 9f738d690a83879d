package test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// TestBridgeLiteKilledAdd SIGKILLs bridge-lite at random points of ADD and checks that the DEL
// or GC of the same round removes whatever the dead ADD had made, while a live attachment of
// the same network survives every GC.
func TestBridgeLiteKilledAdd(t *testing.T) {
	cases := []struct {
		backend string
		rounds  int
		x       int
	}{
		{"nftables", 50, 178},
		{"iptables", 50, 179},
	}
	for _, tc := range cases {
		t.Run(tc.backend, func(t *testing.T) {
			testKilledAdd(t, tc.backend, "blkill-"+tc.backend[:3], tc.x, tc.rounds)
		})
	}
}

func testKilledAdd(t *testing.T, backend, bridge string, x, rounds int) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	n := newLiteNet(t, bins, "kill-"+backend, bridge, backend, fmt.Sprintf(`"subnet": "10.%d.0.0/24"`, x))
	plugin := bins.Require(t, "bridge-lite")
	addConf := n.netconf(t, n.cniVersion, nil)
	pool := []*harness.NetNS{host.NewContainer(t), host.NewContainer(t), host.NewContainer(t)}

	// A live attachment: GC is told it is valid and must leave it alone.
	keeperNS := host.NewContainer(t)
	keeper := "kill-" + backend + "-keeper"
	if _, err := n.add(t, host, keeperNS, keeper); err != nil {
		t.Fatalf("ADD of the live attachment: %v", err)
	}
	t.Cleanup(func() { _ = n.del(t, host, keeperNS, keeper) })

	var normal time.Duration
	for i := range 3 {
		cid := fmt.Sprintf("kill-%s-probe%d", backend, i)
		out, err := n.invoke(host, "ADD", cid, pool[0].Path(), addConf)
		if err != nil {
			t.Fatalf("measuring a normal ADD: %v", err)
		}
		normal = max(normal, out.Duration)
		if err := n.del(t, host, pool[0], cid); err != nil {
			t.Fatalf("DEL after measuring: %v", err)
		}
	}
	t.Logf("a normal ADD (process start to exit) takes up to %s; kills land uniformly in 0..%s", normal, normal)

	opts := n.leftoverOptions(append(slices.Clone(pool), keeperNS)...)
	baseline, err := harness.TakeSnapshot(host, opts)
	if err != nil {
		t.Fatalf("snapshot with only the live attachment: %v", err)
	}
	opts.Baseline = baseline

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("NSNET_FAULT_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("NSNET_FAULT_SEED: %v", err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c))
	t.Logf("random seed %d (rerun with NSNET_FAULT_SEED=%d)", seed, seed)
	stdinFile := filepath.Join(t.TempDir(), "add.json")
	if err := os.WriteFile(stdinFile, addConf, 0o600); err != nil {
		t.Fatal(err)
	}

	killedCount := 0
	phases := map[string]int{}
	for r := range rounds {
		cid := fmt.Sprintf("kill-%s-%02d", backend, r)
		c := pool[r%len(pool)]
		delay := time.Duration(rng.Int64N(int64(normal) + 1))
		inv := harness.Invocation{Command: "ADD", ContainerID: cid, NetNS: c.Path(), IfName: "eth0", Path: n.cniPath}
		killed, err := killedRun(host, plugin, inv, stdinFile, delay)
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		phase := "ADD finished"
		if killed {
			killedCount++
			phase = "killed, left: " + leftBehind(t, host, opts)
		}
		phases[phase]++

		verb := "DEL"
		if r%2 == 0 {
			err = n.del(t, host, c, cid)
		} else {
			verb = "GC"
			err = n.gc(t, host, keeper)
		}
		if err != nil {
			t.Errorf("round %d (%s after %s): %s: %v", r, phase, delay, verb, err)
		}
		if left := leftBehind(t, host, opts); left != "nothing" {
			s, _ := harness.FindLeftovers(host, opts)
			t.Errorf("round %d: %s after a kill at %s (%s) left %s:\n%s", r, verb, delay, phase, left, s)
		}
		for _, dir := range []string{n.stateDir, n.ipamDir()} {
			if files := filesMentioning(t, dir, cid); len(files) > 0 {
				t.Errorf("round %d: %s left files of %s: %v", r, verb, cid, files)
			}
		}
		assertSnapshotHas(t, host, opts, baseline, fmt.Sprintf("round %d (%s): the live attachment", r, verb))
		if t.Failed() {
			t.Fatalf("stopping after round %d", r)
		}
	}
	t.Logf("%d of %d ADDs were killed before they finished", killedCount, rounds)
	for _, p := range slices.Sorted(maps.Keys(phases)) {
		t.Logf("  %3d× %s", phases[p], p)
	}

	if err := n.del(t, host, keeperNS, keeper); err != nil {
		t.Errorf("DEL of the live attachment: %v", err)
	}
	opts.Baseline = nil
	harness.AssertNoLeftovers(t, host, opts)
}

// TestBridgeLiteGCRemovesTornRecord: an ADD killed while writing its first state record leaves
// only "<cid>:<ifname>.json.tmp" (no address, link or rule exists yet). DEL of that attachment
// removes it, and so must GC: the record names the attachment, nothing else exists for it yet.
func TestBridgeLiteGCRemovesTornRecord(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	n := newLiteNet(t, bins, "torn", "bltorn0", "nftables", `"subnet": "10.180.0.0/24"`)
	if err := os.MkdirAll(n.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// What the killed ADD wrote: the start of a record, never renamed into place.
	for _, cid := range []string{"torn-del", "torn-gc"} {
		partial := fmt.Sprintf(`{"containerID":%q,"ifName":"eth0","network":"torn","netns":`, cid)
		if err := os.WriteFile(filepath.Join(n.stateDir, cid+":eth0.json.tmp"), []byte(partial), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := host.NewContainer(t)
	if err := n.del(t, host, c, "torn-del"); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if files := filesMentioning(t, n.stateDir, "torn-del"); len(files) > 0 {
		t.Errorf("DEL left %v", files)
	}
	if err := n.gc(t, host); err != nil {
		t.Errorf("GC: %v", err)
	}
	if files := filesMentioning(t, n.stateDir, "torn-gc"); len(files) > 0 {
		t.Errorf("GC with no valid attachments left the torn record of an interrupted ADD: %v", files)
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
}

// killedRun starts plugin in the host netns with inv's environment and stdin from a file, sends
// it SIGKILL after delay, and reports whether the kill ended it (rather than the plugin exiting
// on its own first, which must then be a success).
func killedRun(host *harness.Host, plugin string, inv harness.Invocation, stdinFile string, delay time.Duration) (bool, error) {
	stdin, err := os.Open(stdinFile)
	if err != nil {
		return false, err
	}
	defer stdin.Close()
	cmd := exec.Command(plugin)
	cmd.Env = pluginEnvironment(inv)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// host.Do locks the goroutine's thread and switches it into the host netns; the child
	// inherits that thread's namespace.
	if err := host.Do(cmd.Start); err != nil {
		return false, fmt.Errorf("starting %s in %s: %w", plugin, host.Name(), err)
	}
	time.Sleep(delay)
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return false, fmt.Errorf("killing pid %d: %w", cmd.Process.Pid, err)
	}
	werr := cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return false, fmt.Errorf("pid %d: unexpected wait status %v", cmd.Process.Pid, cmd.ProcessState)
	}
	if ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true, nil
	}
	if werr != nil {
		return false, fmt.Errorf("ADD exited before the kill and failed: %v\nstdout: %s\nstderr: %s", werr, stdout.Bytes(), stderr.Bytes())
	}
	return false, nil
}

// pluginEnvironment is the process environment a runtime gives a plugin for inv.
func pluginEnvironment(inv harness.Invocation) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"CNI_COMMAND="+inv.Command,
		"CNI_CONTAINERID="+inv.ContainerID,
		"CNI_NETNS="+inv.NetNS,
		"CNI_IFNAME="+inv.IfName,
		"CNI_PATH="+inv.Path,
	)
}

// leftBehind names the kinds of things the host holds beyond opts.Baseline ("nothing" if none).
func leftBehind(t testing.TB, host *harness.Host, opts harness.LeftoverOptions) string {
	t.Helper()
	s, err := harness.FindLeftovers(host, opts)
	if err != nil {
		t.Fatalf("inspecting host: %v", err)
	}
	var kinds []string
	for _, k := range []struct {
		name  string
		lines []string
	}{
		{"host links", s.Links}, {"nftables", s.Nft}, {"iptables", s.IPTables},
		{"files", s.Files}, {"container links", s.ContainerLinks},
	} {
		if len(k.lines) > 0 {
			kinds = append(kinds, k.name)
		}
	}
	if len(kinds) == 0 {
		return "nothing"
	}
	return strings.Join(kinds, "+")
}

// assertSnapshotHas fails the test when something of base is gone from the host.
func assertSnapshotHas(t testing.TB, host *harness.Host, opts harness.LeftoverOptions, base *harness.Snapshot, what string) {
	t.Helper()
	opts.Baseline = nil
	cur, err := harness.TakeSnapshot(host, opts)
	if err != nil {
		t.Fatalf("inspecting host: %v", err)
	}
	var gone []string
	for _, pair := range [][2][]string{
		{base.Links, cur.Links}, {base.Nft, cur.Nft}, {base.IPTables, cur.IPTables},
		{base.Files, cur.Files}, {base.ContainerLinks, cur.ContainerLinks},
	} {
		for _, l := range pair[0] {
			if !slices.Contains(pair[1], l) {
				gone = append(gone, l)
			}
		}
	}
	if len(gone) > 0 {
		t.Errorf("%s lost: %v", what, gone)
	}
}
