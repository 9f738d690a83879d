package test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// TestBridgeLiteErrorsBadInput feeds ADD bad configs and environments: each must fail with the
// CNI error code the spec (or libcni, for 8) assigns and leave nothing behind.
func TestBridgeLiteErrorsBadInput(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.0.0", "beinput", "10.134.0.0/24")
	c := host.NewContainer(t)

	ipam := func(kv ...string) map[string]any {
		m := map[string]any{"type": "host-local", "dataDir": n.dataDir}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		stdin   []byte         // replaces the config when set
		extra   map[string]any // changes to the good config
		modify  func(*harness.Invocation)
		code    uint
		mention string
	}{
		{name: "invalid JSON", stdin: []byte(`{"cniVersion": "1.0.0", "name": "specnet", "type":`), code: types.ErrDecodingFailure},
		{name: "missing name", extra: map[string]any{"name": nil}, code: types.ErrInvalidNetworkConfig, mention: "name"},
		{name: "bad bridge name", extra: map[string]any{"bridge": "br/0"}, code: types.ErrInvalidNetworkConfig, mention: "br/0"},
		{name: "mtu 10", extra: map[string]any{"mtu": 10}, code: types.ErrInvalidNetworkConfig, mention: "mtu 10"},
		{name: "vlan 5000", extra: map[string]any{"vlan": 5000, "isGateway": false, "isDefaultGateway": false}, code: types.ErrInvalidNetworkConfig, mention: "5000"},
		{name: "hairpin and promisc", extra: map[string]any{"hairpinMode": true, "promiscMode": true}, code: types.ErrInvalidNetworkConfig, mention: "hairpinMode"},
		{name: "ipMasqBackend pf", extra: map[string]any{"ipMasqBackend": "pf"}, code: types.ErrInvalidNetworkConfig, mention: "pf"},
		{name: "bad runtimeConfig mac", extra: map[string]any{"runtimeConfig": map[string]any{"mac": "zz:11:22:33:44:55"}}, code: types.ErrInvalidNetworkConfig, mention: "zz:11:22:33:44:55"},
		{name: "subnet with host bits", extra: map[string]any{"ipam": ipam("subnet", "10.1.0.5/24")}, code: types.ErrInvalidNetworkConfig, mention: "10.1.0.5/24"},
		{name: "subnet /32", extra: map[string]any{"ipam": ipam("subnet", "10.134.0.7/32")}, code: types.ErrInvalidNetworkConfig, mention: "10.134.0.7/32"},
		{name: "rangeStart outside subnet", extra: map[string]any{"ipam": ipam("subnet", "10.134.0.0/24", "rangeStart", "10.135.0.10")}, code: types.ErrInvalidNetworkConfig, mention: "10.135.0.10"},
		{name: "unsupported cniVersion", extra: map[string]any{"cniVersion": "9.9.9"}, code: types.ErrIncompatibleCNIVersion},
		{name: "missing CNI_CONTAINERID", modify: func(i *harness.Invocation) { i.ContainerID = "" }, code: types.ErrInvalidEnvironmentVariables, mention: "CNI_CONTAINERID"},
		{name: "CNI_IFNAME with slash", modify: func(i *harness.Invocation) { i.IfName = "a/b" }, code: types.ErrInvalidEnvironmentVariables, mention: "interface name"},
		{name: "CNI_IFNAME too long", modify: func(i *harness.Invocation) { i.IfName = "eth0123456789abc" }, code: types.ErrInvalidEnvironmentVariables, mention: "too long"},
		{name: "CNI_NETNS does not exist", modify: func(i *harness.Invocation) { i.NetNS = filepath.Join(t.TempDir(), "no-such-netns") }, code: types.ErrInvalidEnvironmentVariables, mention: "no-such-netns"},
		{name: "CNI_NETNS is the host", modify: func(i *harness.Invocation) { i.NetNS = host.Path() }, code: types.ErrInvalidNetNS},
		{name: "unknown CNI_COMMAND", modify: func(i *harness.Invocation) { i.Command = "FROB" }, code: types.ErrInvalidEnvironmentVariables, mention: "FROB"},
		{name: "malformed CNI_ARGS", modify: func(i *harness.Invocation) { i.Args = "MAC" }, code: types.ErrInvalidEnvironmentVariables, mention: "MAC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdin := tt.stdin
			if stdin == nil {
				stdin = n.conf(t, tt.extra)
			}
			inv := s.inv("ADD", "err-1", c, "eth0", stdin)
			if tt.modify != nil {
				tt.modify(&inv)
			}
			out := s.exec(inv)
			requireCNIError(t, out, tt.code, tt.mention)
			if files := n.stateFiles(t); len(files) != 0 {
				t.Errorf("state files left: %v", files)
			}
			harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
		})
	}
}

// TestBridgeLiteErrorsIfNameExists: ADD must refuse an interface name the container already
// uses, without touching that interface.
func TestBridgeLiteErrorsIfNameExists(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.1.0", "beexist", "10.135.0.0/24")
	c := host.NewContainer(t)
	for _, args := range [][]string{
		{"ip", "link", "add", "eth0", "address", "02:00:00:00:13:05", "type", "veth", "peer", "name", "eth0peer"},
		{"ip", "addr", "add", "192.0.2.5/24", "dev", "eth0"},
		{"ip", "link", "set", "eth0", "up"},
	} {
		if _, err := c.Exec(t, args...); err != nil {
			t.Fatalf("preparing the container's own eth0: %v", err)
		}
	}
	opts := n.leftoverOptions(c)
	before, err := harness.TakeSnapshot(host, opts)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}

	out := s.exec(s.inv("ADD", "exist-1", c, "eth0", n.conf(t, nil)))
	if !out.Failed() || out.Err == nil {
		t.Fatalf("ADD over an existing eth0 did not fail with an error result:\n%s", out)
	}
	if !strings.Contains(out.Err.Msg, "eth0") || !strings.Contains(out.Err.Msg, "exists") {
		t.Errorf("error %q does not say eth0 already exists", out.Err.Msg)
	}

	eth := linkIn(t, c, "eth0")
	if eth.Type() != "veth" || eth.Attrs().HardwareAddr.String() != "02:00:00:00:13:05" {
		t.Errorf("the container's eth0 changed: now a %s with MAC %s", eth.Type(), eth.Attrs().HardwareAddr)
	}
	addrs, err := netlinkIn(t, c).AddrList(eth, 0)
	if err != nil {
		t.Fatalf("listing addresses: %v", err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "192.0.2.5/24" {
		t.Errorf("the container's eth0 has addresses %v, want only 192.0.2.5/24", addrs)
	}
	if files := n.stateFiles(t); len(files) != 0 {
		t.Errorf("state files left: %v", files)
	}
	opts.Baseline = before
	harness.AssertNoLeftovers(t, host, opts)
}

// TestBridgeLiteErrorsMissingIPAMPlugin: an ipam.type that is not on CNI_PATH fails ADD and
// leaves nothing.
func TestBridgeLiteErrorsMissingIPAMPlugin(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.1.0", "benoipam", "10.136.0.0/24")
	n.ipam()["type"] = "nsnet-no-such-ipam"
	c := host.NewContainer(t)

	out := s.exec(s.inv("ADD", "noipam-1", c, "eth0", n.conf(t, nil)))
	if !out.Failed() || out.Err == nil {
		t.Fatalf("ADD with a missing IPAM plugin did not fail with an error result:\n%s", out)
	}
	if !strings.Contains(out.Err.Msg, "nsnet-no-such-ipam") {
		t.Errorf("error %q does not name the missing IPAM plugin", out.Err.Msg)
	}
	if files := n.stateFiles(t); len(files) != 0 {
		t.Errorf("state files left: %v", files)
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
}

// TestBridgeLiteErrorsAddTwice: a second ADD of the same attachment without DEL fails clearly
// and leaves the first one working.
func TestBridgeLiteErrorsAddTwice(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	n := newSpecNet(t, "1.1.0", "betwice", "10.137.0.0/24")
	list := n.confList(t)
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)
	c := host.NewContainer(t)
	att := harness.Attachment(c, "twice-1", "eth0")

	raw, err := rt.Add(list, att)
	if err != nil {
		t.Fatalf("first ADD: %v", err)
	}
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		t.Fatalf("converting result: %v", err)
	}
	if _, err := rt.Add(list, att); err == nil {
		t.Errorf("second ADD without DEL succeeded")
	} else if !strings.Contains(err.Error(), "already attached") {
		t.Errorf("second ADD error %q does not say the attachment exists", err)
	}
	if err := rt.Check(list, att); err != nil {
		t.Errorf("CHECK of the first attachment after the refused ADD: %v", err)
	}
	assertResultMatchesKernel(t, host, c, n.bridge, "eth0", res)
	if err := harness.Ping(t, c, res.IPs[0].Gateway.String()); err != nil {
		t.Errorf("first attachment lost connectivity: %v", err)
	}
	if err := rt.Del(list, att); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
}
