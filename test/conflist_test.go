package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// TestShippedConflists loads every conflist in cni-conf/ as a runtime would,
// checks that each plugin type is one we build, and runs an ADD, CHECK and
// DEL of a container with a published port through it, with the on-disk
// paths moved into temp dirs.
func TestShippedConflists(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "cni-conf", "*.conflist"))
	if err != nil || len(files) < 4 {
		t.Fatalf("found conflists %v (err %v), want at least 4", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			list, err := libcni.ConfListFromFile(f)
			if err != nil {
				t.Fatalf("libcni cannot load %s: %v", f, err)
			}
			if list.CNIVersion != "1.0.0" && list.CNIVersion != "1.1.0" {
				t.Errorf("cniVersion %s: containerd 1.6 and podman 4.3 need 1.0.0 (1.1.0 only with cniVersions)", list.CNIVersion)
			}
			for _, p := range list.Plugins {
				bins.Require(t, p.Network.Type)
			}
			conf, bridge, dirs := sandboxedConflist(t, f)
			host := harness.NewHost(t)
			c := host.NewContainer(t)
			rt := harness.NewRuntime(t, host.NetNS, bins.CNIPath)
			att := harness.Attachment(c, "conf-"+list.Name, "eth0")
			att.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}}
			l := harness.ConfList(t, conf)
			raw, err := rt.Add(l, att)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			res, err := types100.NewResultFromResult(raw)
			if err != nil || len(res.IPs) == 0 {
				t.Fatalf("ADD result %v has no IPs (err %v)", raw, err)
			}
			if gw := res.IPs[0].Gateway; gw != nil {
				if err := harness.Ping(t, c, gw.String()); err != nil {
					t.Errorf("container cannot reach its gateway %s: %v", gw, err)
				}
			}
			if err := rt.Check(l, att); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := rt.Del(l, att); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			harness.AssertNoLeftovers(t, host, harness.LeftoverOptions{
				AllowLinks:   []string{bridge},
				IPAMDataDirs: []string{dirs["ipam"]},
				StateDirs:    []string{dirs["bridge"], dirs["portmap"]},
				Containers:   []*harness.NetNS{c},
			})
		})
	}
}

// sandboxedConflist returns the conflist at path with its state and IPAM
// directories moved into a temp dir, the bridge name, and those dirs.
func sandboxedConflist(t *testing.T, path string) (string, string, map[string]string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	dirs := map[string]string{"ipam": filepath.Join(tmp, "ipam"), "bridge": filepath.Join(tmp, "bridge"), "portmap": filepath.Join(tmp, "portmap")}
	bridge := ""
	for _, p := range list["plugins"].([]any) {
		p := p.(map[string]any)
		switch p["type"] {
		case "bridge-lite":
			bridge, _ = p["bridge"].(string)
			p["stateDir"] = dirs["bridge"]
			if ipam, ok := p["ipam"].(map[string]any); ok {
				ipam["dataDir"] = dirs["ipam"]
			}
		case "portmap-lite":
			p["stateDir"] = dirs["portmap"]
		}
	}
	out, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), bridge, dirs
}
