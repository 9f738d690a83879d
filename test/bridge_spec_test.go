package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsnet/nsnet/test/harness"
)

var specVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func versionAtLeast(t testing.TB, v, min string) bool {
	t.Helper()
	ok, err := version.GreaterThanOrEqualTo(v, min)
	if err != nil {
		t.Fatalf("comparing versions %s and %s: %v", v, min, err)
	}
	return ok
}

// rawResult is an ADD result as printed, with the version-specific keys kept visible.
type rawResult struct {
	CNIVersion string           `json:"cniVersion"`
	Interfaces []map[string]any `json:"interfaces"`
	IPs        []map[string]any `json:"ips"`
}

// assertRawShape checks the literal ADD stdout against the result format of version v.
func assertRawShape(t *testing.T, stdout []byte, v string) {
	t.Helper()
	var r rawResult
	if err := json.Unmarshal(stdout, &r); err != nil {
		t.Fatalf("decoding ADD stdout %q: %v", stdout, err)
	}
	if r.CNIVersion != v {
		t.Errorf("result cniVersion %q, want the input's %q", r.CNIVersion, v)
	}
	if len(r.IPs) == 0 || len(r.Interfaces) != 3 {
		t.Fatalf("result has %d ips and %d interfaces, want >0 and 3: %s", len(r.IPs), len(r.Interfaces), stdout)
	}
	wantVersionKey := !versionAtLeast(t, v, "1.0.0")
	for i, ip := range r.IPs {
		ver, has := ip["version"]
		if has != wantVersionKey {
			t.Errorf("cniVersion %s: ips[%d] has version key = %v, want %v: %s", v, i, has, wantVersionKey, stdout)
		}
		if has && ver != "4" {
			t.Errorf("ips[%d].version = %v, want \"4\"", i, ver)
		}
		if ip["interface"] != float64(2) {
			t.Errorf("ips[%d].interface = %v, want 2", i, ip["interface"])
		}
	}
	mtu, has := r.Interfaces[2]["mtu"]
	if versionAtLeast(t, v, "1.1.0") {
		if mtu != float64(harness.UplinkMTU) {
			t.Errorf("cniVersion %s: interfaces[2].mtu = %v, want %d", v, mtu, harness.UplinkMTU)
		}
	} else if has {
		t.Errorf("cniVersion %s: interfaces[2] has mtu %v, a key only 1.1.0 defines", v, mtu)
	}
}

// TestBridgeLiteSpecVersions runs ADD/CHECK/DEL for every supported cniVersion, by raw exec to
// see the literal result and through libcni as a runtime would, and compares the result with
// the kernel.
func TestBridgeLiteSpecVersions(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	for i, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			host := harness.NewHost(t)
			s := newSpec(t, host, bins)
			n := newSpecNet(t, v, fmt.Sprintf("bsver%d", i), fmt.Sprintf("10.%d.0.0/24", 120+i))

			cRaw := host.NewContainer(t)
			out, res := s.add("ver-raw", cRaw, "eth0", n.conf(t, nil))
			assertRawShape(t, out.Stdout, v)
			assertResultMatchesKernel(t, host, cRaw, n.bridge, "eth0", res)
			withPrev := n.conf(t, map[string]any{"prevResult": json.RawMessage(out.Stdout)})
			if !versionAtLeast(t, v, "0.4.0") {
				chk := s.exec(s.inv("CHECK", "ver-raw", cRaw, "eth0", withPrev))
				requireCNIError(t, chk, types.ErrIncompatibleCNIVersion, "")
			} else {
				assertNoOutput(t, "CHECK", s.mustSucceed(s.inv("CHECK", "ver-raw", cRaw, "eth0", withPrev)))
			}
			assertNoOutput(t, "DEL", s.mustSucceed(s.inv("DEL", "ver-raw", cRaw, "eth0", withPrev)))

			c := host.NewContainer(t)
			list := n.confList(t)
			rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)
			att := harness.Attachment(c, "ver-lib", "eth0")
			raw, err := rt.Add(list, att)
			if err != nil {
				t.Fatalf("libcni ADD: %v", err)
			}
			if raw.Version() != v {
				t.Errorf("libcni result version %q, want %q", raw.Version(), v)
			}
			res100, err := types100.NewResultFromResult(raw)
			if err != nil {
				t.Fatalf("converting result: %v", err)
			}
			assertResultMatchesKernel(t, host, c, n.bridge, "eth0", res100)
			if err := harness.Ping(t, c, res100.IPs[0].Gateway.String()); err != nil {
				t.Errorf("container cannot reach its gateway: %v", err)
			}
			if versionAtLeast(t, v, "0.4.0") {
				if err := rt.Check(list, att); err != nil {
					t.Errorf("libcni CHECK: %v", err)
				}
			}
			if err := rt.Del(list, att); err != nil {
				t.Fatalf("libcni DEL: %v", err)
			}
			harness.AssertNoLeftovers(t, host, n.leftoverOptions(c, cRaw))
		})
	}
}

// TestBridgeLiteSpecVersionVerb checks VERSION lists every version the plugin claims to speak.
func TestBridgeLiteSpecVersionVerb(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.1.0", "bsverb", "10.129.0.0/24")

	out := s.mustSucceed(harness.Invocation{Command: "VERSION", Config: []byte(`{"cniVersion":"1.1.0"}`)})
	var vi struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(out.Stdout, &vi); err != nil {
		t.Fatalf("decoding VERSION output %q: %v", out.Stdout, err)
	}
	if vi.CNIVersion == "" {
		t.Errorf("VERSION output has no cniVersion: %s", out.Stdout)
	}
	for _, v := range specVersions {
		if !slices.Contains(vi.SupportedVersions, v) {
			t.Errorf("supportedVersions %v lacks %s", vi.SupportedVersions, v)
		}
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions())
}

// TestBridgeLiteSpecContainerMAC sets the container MAC through the mac capability,
// args.cni.mac and CNI_ARGS, and checks their precedence (in that order).
func TestBridgeLiteSpecContainerMAC(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	n := newSpecNet(t, "1.1.0", "bsmac", "10.125.0.0/24")
	n.plugin["capabilities"] = map[string]any{"mac": true}
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)

	tests := []struct {
		name    string
		capMAC  string // runtimeConfig.mac through the mac capability
		argsMAC string // args.cni.mac
		envMAC  string // CNI_ARGS MAC=
		want    string
	}{
		{name: "runtimeConfig", capMAC: "c2:11:22:33:44:55", want: "c2:11:22:33:44:55"},
		{name: "args.cni.mac", argsMAC: "c2:11:22:33:44:66", want: "c2:11:22:33:44:66"},
		{name: "CNI_ARGS", envMAC: "c2:11:22:33:44:99", want: "c2:11:22:33:44:99"},
		{name: "runtimeConfig beats args", capMAC: "c2:11:22:33:44:77", argsMAC: "c2:11:22:33:44:88", want: "c2:11:22:33:44:77"},
		{name: "args beat CNI_ARGS", argsMAC: "c2:11:22:33:44:aa", envMAC: "c2:11:22:33:44:bb", want: "c2:11:22:33:44:aa"},
	}
	var containers []*harness.NetNS
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := host.NewContainer(t)
			containers = append(containers, c)
			nn := *n
			nn.plugin = deepCopy(t, n.plugin)
			if tt.argsMAC != "" {
				nn.plugin["args"] = map[string]any{"cni": map[string]any{"mac": tt.argsMAC}}
			}
			list := nn.confList(t)
			att := harness.Attachment(c, fmt.Sprintf("mac-%d", i), "eth0")
			if tt.capMAC != "" {
				att.CapabilityArgs = map[string]any{"mac": tt.capMAC}
			}
			if tt.envMAC != "" {
				att.Args = [][2]string{{"IgnoreUnknown", "1"}, {"MAC", tt.envMAC}}
			}
			raw, err := rt.Add(list, att)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res, err := types100.NewResultFromResult(raw)
			if err != nil {
				t.Fatalf("converting result: %v", err)
			}
			if got := linkIn(t, c, "eth0").Attrs().HardwareAddr.String(); got != tt.want {
				t.Errorf("eth0 MAC %s, want %s", got, tt.want)
			}
			assertResultMatchesKernel(t, host, c, n.bridge, "eth0", res)
			if err := rt.Check(list, att); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := rt.Del(list, att); err != nil {
				t.Fatalf("DEL: %v", err)
			}
		})
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(containers...))
}

// TestBridgeLiteSpecMTU checks the container MTU follows the host's default-route interface
// unless the config sets one.
func TestBridgeLiteSpecMTU(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	tests := []struct {
		name string
		mtu  int // 0: not in the config
		want int
	}{
		{name: "default from uplink", want: harness.UplinkMTU},
		{name: "explicit", mtu: 1300, want: 1300},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := harness.NewHost(t)
			s := newSpec(t, host, bins)
			n := newSpecNet(t, "1.1.0", fmt.Sprintf("bsmtu%d", i), fmt.Sprintf("10.%d.0.0/24", 127+i))
			if tt.mtu != 0 {
				n.plugin["mtu"] = tt.mtu
			}
			c := host.NewContainer(t)
			out, res := s.add("mtu-1", c, "eth0", n.conf(t, nil))
			if got := linkIn(t, c, "eth0").Attrs().MTU; got != tt.want {
				t.Errorf("container eth0 MTU %d, want %d", got, tt.want)
			}
			if got := linkIn(t, host.NetNS, res.Interfaces[1].Name).Attrs().MTU; got != tt.want {
				t.Errorf("host veth MTU %d, want %d", got, tt.want)
			}
			if got := res.Interfaces[2].Mtu; got != tt.want {
				t.Errorf("result interfaces[2].mtu %d, want %d", got, tt.want)
			}
			s.mustSucceed(s.inv("DEL", "mtu-1", c, "eth0", n.conf(t, map[string]any{"prevResult": json.RawMessage(out.Stdout)})))
			harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
		})
	}
}

// TestBridgeLiteSpecDelVariants runs DEL in every situation the spec says it must survive,
// checking after each that nothing is left.
func TestBridgeLiteSpecDelVariants(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.1.0", "bsdel", "10.130.0.0/24")
	list := n.confList(t)
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)

	t.Run("twice", func(t *testing.T) {
		c := host.NewContainer(t)
		att := harness.Attachment(c, "del-twice", "eth0")
		if _, err := rt.Add(list, att); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		for i := range 2 {
			if err := rt.Del(list, att); err != nil {
				t.Fatalf("DEL #%d: %v", i+1, err)
			}
		}
		harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
	})

	t.Run("netns already deleted", func(t *testing.T) {
		c := host.NewContainer(t)
		att := harness.Attachment(c, "del-nonetns", "eth0")
		if _, err := rt.Add(list, att); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		// The test's cleanup closes c again; Close tolerates a namespace already gone.
		if err := c.Close(); err != nil {
			t.Fatalf("deleting container netns: %v", err)
		}
		if _, err := os.Stat(att.NetNS); err == nil {
			t.Fatalf("netns path %s still exists after deleting it", att.NetNS)
		}
		if err := rt.Del(list, att); err != nil {
			t.Fatalf("DEL with the netns gone: %v", err)
		}
		assertExists(t, n.stateFile("del-nonetns", "eth0"), false)
		harness.AssertNoLeftovers(t, host, n.leftoverOptions())
	})

	t.Run("empty CNI_NETNS", func(t *testing.T) {
		c := host.NewContainer(t)
		out, _ := s.add("del-emptyns", c, "eth0", n.conf(t, nil))
		inv := s.inv("DEL", "del-emptyns", nil, "eth0", n.conf(t, map[string]any{"prevResult": json.RawMessage(out.Stdout)}))
		s.mustSucceed(inv)
		harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
	})

	t.Run("no prevResult", func(t *testing.T) {
		c := host.NewContainer(t)
		s.add("del-noprev", c, "eth0", n.conf(t, nil))
		s.mustSucceed(s.inv("DEL", "del-noprev", c, "eth0", n.conf(t, nil)))
		harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
	})

	t.Run("network renamed", func(t *testing.T) {
		c := host.NewContainer(t)
		_, res := s.add("del-rename", c, "eth0", n.conf(t, map[string]any{"name": "a"}))
		ip := res.IPs[0].Address.IP.String()
		assertExists(t, n.ipamFile("a", ip), true)
		if !masqContains(t, host, ip) {
			t.Errorf("no masquerade element for %s after ADD:\n%s", ip, masqRuleset(t, host))
		}
		s.mustSucceed(s.inv("DEL", "del-rename", c, "eth0", n.conf(t, map[string]any{"name": "b"})))
		assertExists(t, n.ipamFile("a", ip), false)
		if masqContains(t, host, ip) {
			t.Errorf("masquerade element for %s survived DEL:\n%s", ip, masqRuleset(t, host))
		}
		harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
	})

	t.Run("without ADD", func(t *testing.T) {
		c := host.NewContainer(t)
		assertNoOutput(t, "DEL", s.mustSucceed(s.inv("DEL", "del-never-added", c, "eth0", n.conf(t, nil))))
		assertExists(t, n.stateFile("del-never-added", "eth0"), false)
		harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
	})
}

// TestBridgeLiteSpecCheckDetectsDamage breaks an attachment behind the plugin's back and
// expects CHECK to name what is missing.
func TestBridgeLiteSpecCheckDetectsDamage(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	n := newSpecNet(t, "1.1.0", "bschk", "10.131.0.0/24")
	list := n.confList(t)
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)

	add := func(c *harness.NetNS, id string) (*libcni.RuntimeConf, *types100.Result) {
		t.Helper()
		att := harness.Attachment(c, id, "eth0")
		raw, err := rt.Add(list, att)
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		res, err := types100.NewResultFromResult(raw)
		if err != nil {
			t.Fatalf("converting result: %v", err)
		}
		if err := rt.Check(list, att); err != nil {
			t.Fatalf("CHECK %s right after ADD: %v", id, err)
		}
		return att, res
	}
	c1, c2 := host.NewContainer(t), host.NewContainer(t)
	att1, res1 := add(c1, "chk-addr")
	att2, res2 := add(c2, "chk-masq")

	addr1 := res1.IPs[0].Address.String()
	if _, err := c1.Exec(t, "ip", "addr", "del", addr1, "dev", "eth0"); err != nil {
		t.Fatalf("deleting container address: %v", err)
	}
	err := rt.Check(list, att1)
	if err == nil {
		t.Errorf("CHECK passed although eth0 lost %s", addr1)
	} else if !strings.Contains(err.Error(), res1.IPs[0].Address.IP.String()) || !strings.Contains(err.Error(), "address") {
		t.Errorf("CHECK error %q does not say address %s is missing", err, addr1)
	}

	ip2 := res2.IPs[0].Address.IP.String()
	ruleset := masqRuleset(t, host)
	m := nftMasqMapRE.FindStringSubmatch(ruleset)
	if m == nil {
		t.Fatalf("no IPv4 member set/map in the nsnet-masq table:\n%s", ruleset)
	}
	if !masqContains(t, host, ip2) {
		t.Fatalf("no masquerade element for %s:\n%s", ip2, ruleset)
	}
	if _, err := host.Exec(t, "nft", "flush", m[1], "inet", "nsnet-masq", m[2]); err != nil {
		t.Fatalf("flushing %s %s: %v", m[1], m[2], err)
	}
	err = rt.Check(list, att2)
	if err == nil {
		t.Errorf("CHECK passed although the masquerade element of %s is gone", ip2)
	} else if !strings.Contains(err.Error(), "masquerade") || !strings.Contains(err.Error(), ip2) {
		t.Errorf("CHECK error %q does not say the masquerade of %s is missing", err, ip2)
	}

	for _, att := range []*libcni.RuntimeConf{att1, att2} {
		if err := rt.Del(list, att); err != nil {
			t.Errorf("DEL %s of a damaged attachment: %v", att.ContainerID, err)
		}
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c1, c2))
}

// TestBridgeLiteSpecPoolExhaustion fills a three-address pool: the fourth ADD fails cleanly,
// STATUS reports 50 until a DEL frees an address.
func TestBridgeLiteSpecPoolExhaustion(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	n := newSpecNet(t, "1.1.0", "bsfull", "10.132.0.0/29")
	n.ipam()["rangeStart"] = "10.132.0.2"
	n.ipam()["rangeEnd"] = "10.132.0.4"
	list := n.confList(t)
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)

	if err := rt.Status(list); err != nil {
		t.Fatalf("STATUS on an empty pool: %v", err)
	}
	var atts []*libcni.RuntimeConf
	var containers []*harness.NetNS
	for i := range 3 {
		c := host.NewContainer(t)
		containers = append(containers, c)
		att := harness.Attachment(c, fmt.Sprintf("full-%d", i), "eth0")
		if _, err := rt.Add(list, att); err != nil {
			t.Fatalf("ADD %d of 3: %v", i+1, err)
		}
		atts = append(atts, att)
	}

	c4 := host.NewContainer(t)
	containers = append(containers, c4)
	opts := n.leftoverOptions(c4)
	before, err := harness.TakeSnapshot(host, opts)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	att4 := harness.Attachment(c4, "full-3", "eth0")
	_, err = rt.Add(list, att4)
	if err == nil {
		t.Fatalf("ADD into a full pool succeeded")
	}
	if !strings.Contains(err.Error(), "no IP addresses available") {
		t.Errorf("ADD into a full pool: error %q does not say the pool is exhausted", err)
	}
	opts.Baseline = before
	harness.AssertNoLeftovers(t, host, opts)
	assertExists(t, n.stateFile("full-3", "eth0"), false)

	var te *types.Error
	if err := rt.Status(list); err == nil {
		t.Errorf("STATUS succeeded with the pool exhausted")
	} else if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with the pool exhausted: %v, want a CNI error with code %d", err, types.ErrPluginNotAvailable)
	}

	if err := rt.Del(list, atts[0]); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := rt.Status(list); err != nil {
		t.Errorf("STATUS after a DEL freed an address: %v", err)
	}
	raw, err := rt.Add(list, att4)
	if err != nil {
		t.Fatalf("ADD after a DEL freed an address: %v", err)
	}
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		t.Fatalf("converting result: %v", err)
	}
	if got := res.IPs[0].Address.String(); got != "10.132.0.2/29" {
		t.Errorf("ADD after DEL got %s, want the freed 10.132.0.2/29", got)
	}
	for _, att := range append(atts[1:], att4) {
		if err := rt.Del(list, att); err != nil {
			t.Errorf("DEL %s: %v", att.ContainerID, err)
		}
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(containers...))
}

// TestBridgeLiteSpecGC checks the plugin's own GC: a stale attachment the runtime has no cache
// entry for is removed through libcni's GC, a GC without the valid-attachments key frees
// nothing, and one with an empty list frees everything.
func TestBridgeLiteSpecGC(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.1.0", "bsgc", "10.133.0.0/24")
	list := n.confList(t)
	cacheDir := t.TempDir()
	rt := &harness.Runtime{Host: host.NetNS, CNI: libcni.NewCNIConfigWithCacheDir(filepath.SplitList(bins.CNIPath), cacheDir, nil)}

	var (
		containers []*harness.NetNS
		atts       []*libcni.RuntimeConf
		results    []*types100.Result
	)
	for i := range 3 {
		c := host.NewContainer(t)
		att := harness.Attachment(c, fmt.Sprintf("gc-%d", i), "eth0")
		raw, err := rt.Add(list, att)
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		res, err := types100.NewResultFromResult(raw)
		if err != nil {
			t.Fatalf("converting result: %v", err)
		}
		containers, atts, results = append(containers, c), append(atts, att), append(results, res)
	}
	// Without its cache entry libcni does not DEL the third attachment, so only the plugin's
	// GC can remove it.
	cacheFile := filepath.Join(cacheDir, "results", n.name+"-gc-2-eth0")
	if err := os.Remove(cacheFile); err != nil {
		t.Fatalf("removing libcni cache entry: %v", err)
	}

	stale := results[2]
	staleIP := stale.IPs[0].Address.IP.String()
	assertExists(t, n.ipamFile(n.name, staleIP), true)
	if !masqContains(t, host, staleIP) {
		t.Fatalf("no masquerade element for %s before GC:\n%s", staleIP, masqRuleset(t, host))
	}
	valid := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
		{ContainerID: "gc-0", IfName: "eth0"}, {ContainerID: "gc-1", IfName: "eth0"},
	}}
	if err := rt.GC(list, valid); err != nil {
		t.Fatalf("libcni GC: %v", err)
	}
	if _, err := netlinkIn(t, host.NetNS).LinkByName(stale.Interfaces[1].Name); err == nil {
		t.Errorf("host veth %s of the stale attachment survived GC", stale.Interfaces[1].Name)
	}
	if links := containerLinks(t, containers[2]); len(links) != 0 {
		t.Errorf("stale container still has %v after GC", links)
	}
	assertExists(t, n.ipamFile(n.name, staleIP), false)
	assertExists(t, n.stateFile("gc-2", "eth0"), false)
	if masqContains(t, host, staleIP) {
		t.Errorf("masquerade element for %s survived GC:\n%s", staleIP, masqRuleset(t, host))
	}
	assertLive := func(when string) {
		t.Helper()
		for i := range 2 {
			if err := rt.Check(list, atts[i]); err != nil {
				t.Errorf("%s: CHECK gc-%d: %v", when, i, err)
			}
			if err := harness.Ping(t, containers[i], results[i].IPs[0].Gateway.String()); err != nil {
				t.Errorf("%s: gc-%d: %v", when, i, err)
			}
			assertExists(t, n.stateFile(atts[i].ContainerID, "eth0"), true)
			assertExists(t, n.ipamFile(n.name, results[i].IPs[0].Address.IP.String()), true)
		}
	}
	assertLive("after libcni GC")

	assertNoOutput(t, "GC", s.mustSucceed(harness.Invocation{Command: "GC", Path: bins.CNIPath, Config: n.conf(t, nil)}))
	assertLive("after GC without cni.dev/valid-attachments")

	s.mustSucceed(harness.Invocation{Command: "GC", Path: bins.CNIPath,
		Config: n.conf(t, map[string]any{"cni.dev/valid-attachments": []any{}})})
	if files := n.stateFiles(t); len(files) != 0 {
		t.Errorf("state records left after GC with an empty valid list: %v", files)
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(containers...))
}

func containerLinks(t testing.TB, c *harness.NetNS) []string {
	t.Helper()
	links, err := netlinkIn(t, c).LinkList()
	if err != nil {
		t.Fatalf("listing links in %s: %v", c.Name(), err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// TestBridgeLiteSpecMacSpoofChk: with macspoofchk the host veth is guarded
// by the bridge-family nftables table, CHECK verifies the guard, and DEL
// removes it with the last attachment.
func TestBridgeLiteSpecMacSpoofChk(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.0.0", "bsmac", "10.137.8.0/24")
	c := host.NewContainer(t)
	conf := n.conf(t, map[string]any{"macspoofchk": true})
	_, res := s.add("mac-1", c, "eth0", conf)

	out, err := host.Exec(t, "nft", "list", "table", "bridge", "nsnet-macspoof")
	if err != nil {
		t.Fatalf("no MAC-spoofing table after ADD: %v", err)
	}
	hostVeth, mac := res.Interfaces[1].Name, res.Interfaces[2].Mac
	if !strings.Contains(string(out), hostVeth) || !strings.Contains(string(out), mac) {
		t.Errorf("guard for %s / %s missing:\n%s", hostVeth, mac, out)
	}
	check := n.conf(t, map[string]any{"macspoofchk": true, "prevResult": res})
	assertNoOutput(t, "CHECK", s.mustSucceed(s.inv("CHECK", "mac-1", c, "eth0", check)))

	s.mustSucceed(s.inv("DEL", "mac-1", c, "eth0", conf))
	if out, err := host.Exec(t, "nft", "list", "table", "bridge", "nsnet-macspoof"); err == nil {
		t.Errorf("MAC-spoofing table left after the last DEL:\n%s", out)
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
}
