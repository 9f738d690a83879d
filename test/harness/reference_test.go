package harness

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// refBridgeConf is a reference bridge network whose state lives in the test's temp dirs.
func refBridgeConf(t *testing.T, cniVersion, bridge, subnet string) (conf, dataDir string) {
	t.Helper()
	dataDir = filepath.Join(t.TempDir(), "ipam")
	conf = fmt.Sprintf(`{
		"cniVersion": %q, "name": "refnet", "type": "bridge", "bridge": %q,
		"isGateway": true, "isDefaultGateway": true, "ipMasq": true,
		"ipam": {"type": "host-local", "subnet": %q, "dataDir": %q}
	}`, cniVersion, bridge, subnet, dataDir)
	return conf, dataDir
}

func containerAddr(t *testing.T, res *types100.Result, c *NetNS, ifName string) *types100.IPConfig {
	t.Helper()
	if len(res.IPs) != 1 {
		t.Fatalf("want one IP in result, got %+v", res)
	}
	ip := res.IPs[0]
	if ip.Interface == nil || *ip.Interface >= len(res.Interfaces) {
		t.Fatalf("IP %s does not point at an interface: %+v", ip.Address.String(), res)
	}
	iface := res.Interfaces[*ip.Interface]
	if iface.Name != ifName || iface.Sandbox != c.Path() {
		t.Errorf("IP %s is on %+v, want %s in %s", ip.Address.String(), iface, ifName, c.Path())
	}
	return ip
}

// checkMasqueradedEgress: the container reaches the outside world, which sees the host's uplink address.
func checkMasqueradedEgress(t *testing.T, host *Host, c *NetNS, gw net.IP) {
	t.Helper()
	if err := Ping(t, c, gw.String()); err != nil {
		t.Error(err)
	}
	StartWhoami(t, host.Ext, "tcp4", 8080)
	got, err := AskWhoami(c, "tcp4", ExtUplinkIP+":8080")
	if err != nil {
		t.Fatal(err)
	}
	if got != HostUplinkIP {
		t.Errorf("outside saw %s, want the masqueraded %s", got, HostUplinkIP)
	}
}

func TestReferenceBridgeThroughLibcni(t *testing.T) {
	RequireRoot(t)
	refDir := ReferencePlugins(t)
	host := NewHost(t)
	c := host.NewContainer(t)
	conf, dataDir := refBridgeConf(t, "1.0.0", "cniref0", "10.88.0.0/24")
	list := ConfList(t, `{"cniVersion":"1.0.0","name":"refnet","plugins":[`+conf+`]}`)
	rt := NewRuntime(t, host.NetNS, refDir)
	att := Attachment(c, "ctr-libcni", "eth0")
	opts := LeftoverOptions{AllowLinks: []string{"cniref0"}, IPAMDataDirs: []string{dataDir}, Containers: []*NetNS{c}}

	if caps, err := rt.Validate(list); err != nil {
		t.Fatalf("validate: %v (caps %v)", err, caps)
	}
	raw, err := rt.Add(list, att)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		t.Fatal(err)
	}
	ip := containerAddr(t, res, c, "eth0")
	if err := rt.Check(list, att); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	checkMasqueradedEgress(t, host, c, ip.Gateway)
	if during, err := FindLeftovers(host, opts); err != nil || during.Empty() {
		t.Errorf("an attachment should show up as leftovers before DEL: %v, err %v", during, err)
	}

	if err := rt.Del(list, att); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := rt.Del(list, att); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	AssertNoLeftovers(t, host, opts)
}

func TestReferenceBridgeThroughRawExec(t *testing.T) {
	RequireRoot(t)
	refDir := ReferencePlugins(t)
	host := NewHost(t)
	c := host.NewContainer(t)
	conf, dataDir := refBridgeConf(t, "1.0.0", "cniraw0", "10.88.0.0/24")
	inv := Invocation{ContainerID: "ctr-raw", NetNS: c.Path(), IfName: "eth0", Path: refDir, Config: []byte(conf)}
	call := func(command string, mod func(*Invocation)) *PluginOutput {
		t.Helper()
		i := inv
		i.Command = command
		if mod != nil {
			mod(&i)
		}
		out, err := ExecPlugin(host.NetNS, "bridge", i)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	ver := call("VERSION", func(i *Invocation) { i.Config = []byte(`{"cniVersion":"1.0.0"}`) })
	if ver.Failed() || !strings.Contains(string(ver.Stdout), `"supportedVersions"`) {
		t.Errorf("VERSION: %s", ver)
	}

	bad := call("ADD", func(i *Invocation) { i.IfName = "" })
	if !bad.Failed() || bad.Err == nil || bad.Err.Code != 4 || !strings.Contains(bad.Err.Msg, "CNI_IFNAME") {
		t.Errorf("ADD without CNI_IFNAME: want error code 4 naming it, got %s (parsed %+v)", bad, bad.Err)
	}

	add := call("ADD", nil)
	if add.Failed() {
		t.Fatalf("ADD: %s", add)
	}
	res, err := add.Result100()
	if err != nil {
		t.Fatal(err)
	}
	ip := containerAddr(t, res, c, "eth0")
	if err := Ping(t, c, ip.Gateway.String()); err != nil {
		t.Error(err)
	}

	// CHECK and DEL get the ADD result as prevResult, as a runtime sends it.
	var withPrev map[string]any
	if err := json.Unmarshal([]byte(conf), &withPrev); err != nil {
		t.Fatal(err)
	}
	withPrev["prevResult"] = json.RawMessage(add.Stdout)
	prevConf, err := json.Marshal(withPrev)
	if err != nil {
		t.Fatal(err)
	}
	if check := call("CHECK", func(i *Invocation) { i.Config = prevConf }); check.Failed() || len(check.Stdout) != 0 {
		t.Errorf("CHECK: want success with no output, got %s", check)
	}
	if del := call("DEL", func(i *Invocation) { i.Config = prevConf }); del.Failed() {
		t.Fatalf("DEL: %s", del)
	}
	if del := call("DEL", nil); del.Failed() {
		t.Errorf("DEL without prevResult after DEL: %s", del)
	}
	AssertNoLeftovers(t, host, LeftoverOptions{
		AllowLinks: []string{"cniraw0"}, IPAMDataDirs: []string{dataDir}, Containers: []*NetNS{c},
	})
}

// TestReferenceGCAndStatus drives GC and STATUS through libcni at 1.1.0: an attachment absent
// from the valid list is DELeted by libcni before the plugins' GC runs.
func TestReferenceGCAndStatus(t *testing.T) {
	RequireRoot(t)
	refDir := ReferencePlugins(t)
	host := NewHost(t)
	c := host.NewContainer(t)
	conf, dataDir := refBridgeConf(t, "1.1.0", "cnigc0", "10.88.0.0/24")
	list := ConfList(t, `{"cniVersion":"1.1.0","name":"refnet","plugins":[`+conf+`]}`)
	rt := NewRuntime(t, host.NetNS, refDir)

	if err := rt.Status(list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if _, err := rt.Add(list, Attachment(c, "ctr-gc", "eth0")); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := rt.GC(list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	AssertNoLeftovers(t, host, LeftoverOptions{
		AllowLinks: []string{"cnigc0"}, IPAMDataDirs: []string{dataDir}, Containers: []*NetNS{c},
	})
}

func TestCnitool(t *testing.T) {
	out, err := exec.Command(Cnitool(t), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "add") {
		t.Errorf("cnitool --help: %v\n%s", err, out)
	}
}
