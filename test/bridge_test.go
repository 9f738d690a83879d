package test

import (
	"fmt"
	"path/filepath"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// bridgeLiteNet is a bridge-lite network whose IPAM and attachment state live in temp dirs.
type bridgeLiteNet struct {
	conflist string
	bridge   string
	dataDir  string
	stateDir string
}

func newBridgeLiteNet(t *testing.T, cniVersion, bridge, subnet string) bridgeLiteNet {
	t.Helper()
	tmp := t.TempDir()
	n := bridgeLiteNet{bridge: bridge, dataDir: filepath.Join(tmp, "ipam"), stateDir: filepath.Join(tmp, "state")}
	n.conflist = fmt.Sprintf(`{"cniVersion": %[1]q, "name": "litenet", "plugins": [{
		"type": "bridge-lite", "bridge": %[2]q, "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
		"stateDir": %[3]q,
		"ipam": {"type": "host-local", "subnet": %[4]q, "dataDir": %[5]q}
	}]}`, cniVersion, bridge, n.stateDir, subnet, n.dataDir)
	return n
}

func (n bridgeLiteNet) leftoverOptions(containers ...*harness.NetNS) harness.LeftoverOptions {
	return harness.LeftoverOptions{
		AllowLinks:   []string{n.bridge},
		IPAMDataDirs: []string{n.dataDir},
		StateDirs:    []string{n.stateDir},
		Containers:   containers,
	}
}

func TestBridgeLiteSmoke(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	bins.Require(t, "bridge-lite")
	host := harness.NewHost(t)
	c := host.NewContainer(t)
	net := newBridgeLiteNet(t, "1.0.0", "brlite0", "10.88.0.0/24")
	list := harness.ConfList(t, net.conflist)
	rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)
	att := harness.Attachment(c, "smoke-1", "eth0")

	raw, err := rt.Add(list, att)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		t.Fatalf("converting ADD result: %v", err)
	}
	if len(res.IPs) == 0 {
		t.Fatalf("ADD result has no IP: %+v", res)
	}
	if err := rt.Check(list, att); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := rt.Del(list, att); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	harness.AssertNoLeftovers(t, host, net.leftoverOptions(c))
}
