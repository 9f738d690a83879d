package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"

	"github.com/nsnet/nsnet/test/harness"
)

// loadManifests splits a multi-document YAML file and decodes every document.
func loadManifests(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, doc := range strings.Split("\n"+string(data), "\n---") {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if string(js) == "null" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// dig walks v along keys (map keys, or "name=X" to pick the list element named X).
func dig(v any, keys ...string) any {
	for _, k := range keys {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			name, ok := strings.CutPrefix(k, "name=")
			if !ok {
				return nil
			}
			v = nil
			for _, e := range x {
				if m, _ := e.(map[string]any); m != nil && m["name"] == name {
					v = m
				}
			}
		default:
			return nil
		}
	}
	return v
}

// TestDaemonSetManifest checks cni-conf/nsnet-daemonset.yaml at the schema level (it cannot run
// here): the objects and their API versions, a host-network DaemonSet on every node that mounts
// the host's /opt/cni/bin and /etc/cni/net.d, gets NODE_NAME from the downward API and runs the
// ConfigMap's install script with a service account allowed to read nodes. Then it runs that
// script (with the machine's sh) against temp dirs standing in for the host paths, once with
// POD_CIDRS and once reading a fake API server's Node, and loads the conflist it wrote with
// libcni.
func TestDaemonSetManifest(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	docs := loadManifests(t, filepath.Join(root, "cni-conf", "nsnet-daemonset.yaml"))
	byKind := map[string]map[string]any{}
	for _, m := range docs {
		byKind[fmt.Sprint(m["kind"])] = m
	}
	want := map[string]string{
		"ServiceAccount": "v1", "ConfigMap": "v1", "DaemonSet": "apps/v1",
		"ClusterRole": "rbac.authorization.k8s.io/v1", "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
	}
	if len(docs) != len(want) {
		t.Errorf("%d objects, want %d (%v)", len(docs), len(want), want)
	}
	for kind, api := range want {
		if got, _ := byKind[kind]["apiVersion"].(string); got != api {
			t.Errorf("%s: apiVersion %q, want %q", kind, got, api)
		}
	}

	ds := byKind["DaemonSet"]
	pod := dig(ds, "spec", "template", "spec")
	if dig(pod, "hostNetwork") != true {
		t.Error("the DaemonSet's pods must use the host network: the node has no pod network before them")
	}
	sel, labels := dig(ds, "spec", "selector", "matchLabels"), dig(ds, "spec", "template", "metadata", "labels")
	if sel == nil || fmt.Sprint(sel) != fmt.Sprint(labels) {
		t.Errorf("selector %v does not match the pod labels %v", sel, labels)
	}
	sa := dig(byKind["ServiceAccount"], "metadata", "name")
	if dig(pod, "serviceAccountName") != sa || dig(byKind["ServiceAccount"], "metadata", "namespace") != dig(ds, "metadata", "namespace") {
		t.Errorf("the pods run as %v, not as the manifest's service account %v in their namespace", dig(pod, "serviceAccountName"), sa)
	}
	if !tolerateAll(dig(pod, "tolerations")) {
		t.Errorf("tolerations %v do not let it run on every node", dig(pod, "tolerations"))
	}
	checkRBAC(t, byKind["ClusterRole"], byKind["ClusterRoleBinding"], sa)

	containers, _ := dig(pod, "containers").([]any)
	if len(containers) != 1 {
		t.Fatalf("want one container, got %d", len(containers))
	}
	c := containers[0]
	mounts := map[string]string{} // mountPath -> volume name
	for _, m := range asList(dig(c, "volumeMounts")) {
		mounts[fmt.Sprint(dig(m, "mountPath"))] = fmt.Sprint(dig(m, "name"))
	}
	hostPaths := map[string]string{} // volume name -> host path
	configMapVolumes := map[string]string{}
	for _, v := range asList(dig(pod, "volumes")) {
		name := fmt.Sprint(dig(v, "name"))
		if p := dig(v, "hostPath", "path"); p != nil {
			hostPaths[name] = fmt.Sprint(p)
		}
		if cm := dig(v, "configMap", "name"); cm != nil {
			configMapVolumes[name] = fmt.Sprint(cm)
		}
	}
	env := map[string]string{}
	for _, e := range asList(dig(c, "env")) {
		name := fmt.Sprint(dig(e, "name"))
		if f := dig(e, "valueFrom", "fieldRef", "fieldPath"); f != nil {
			env[name] = "fieldRef:" + fmt.Sprint(f)
		} else {
			env[name] = fmt.Sprint(dig(e, "value"))
		}
	}
	if env["NODE_NAME"] != "fieldRef:spec.nodeName" {
		t.Errorf("NODE_NAME is %q, want the downward API's spec.nodeName", env["NODE_NAME"])
	}
	// The script's defaults say where the host dirs and the ConfigMap are mounted.
	for mountPath, hostPath := range map[string]string{"/host/opt/cni/bin": "/opt/cni/bin", "/host/etc/cni/net.d": "/etc/cni/net.d"} {
		if vol, ok := mounts[mountPath]; !ok || hostPaths[vol] != hostPath {
			t.Errorf("%s is not the host's %s (mounts %v, host paths %v)", mountPath, hostPath, mounts, hostPaths)
		}
	}
	cmName := dig(byKind["ConfigMap"], "metadata", "name")
	if vol, ok := mounts["/etc/nsnet-cni"]; !ok || configMapVolumes[vol] != cmName {
		t.Errorf("the ConfigMap %v is not mounted at /etc/nsnet-cni", cmName)
	}
	if cmd := fmt.Sprint(dig(c, "command")); !strings.Contains(cmd, "/etc/nsnet-cni/install.sh") {
		t.Errorf("the container runs %s, not the ConfigMap's install.sh", cmd)
	}

	data, _ := dig(byKind["ConfigMap"], "data").(map[string]any)
	script, _ := data["install.sh"].(string)
	template, _ := data["10-bridge-lite.conflist.template"].(string)
	if script == "" || template == "" {
		t.Fatalf("the ConfigMap lacks install.sh or the conflist template: keys %v", data)
	}
	t.Run("POD_CIDRS", func(t *testing.T) {
		runInstallScript(t, script, template, []string{"POD_CIDRS=10.244.3.0/24"}, []string{"10.244.3.0/24"})
	})
	t.Run("NodeFromAPI", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl is not installed")
		}
		const token = "nsnet-test-token"
		node := `{
  "kind": "Node",
  "apiVersion": "v1",
  "metadata": {"name": "node-a", "annotations": {"note": "{\"podCIDRs\":[\"192.0.2.0/24\"]}"}},
  "spec": {
    "podCIDR": "10.244.5.0/24",
    "podCIDRs": [
      "10.244.5.0/24",
      "fd00:5::/64"
    ]
  },
  "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}
}`
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/v1/nodes/node-a" || r.Header.Get("Authorization") != "Bearer "+token {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			fmt.Fprint(w, node)
		}))
		t.Cleanup(api.Close)
		saDir := t.TempDir()
		for name, content := range map[string]string{"token": token, "ca.crt": ""} {
			if err := os.WriteFile(filepath.Join(saDir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		runInstallScript(t, script, template,
			[]string{"NODE_NAME=node-a", "NSNET_API_URL=" + api.URL, "NSNET_SA_DIR=" + saDir},
			[]string{"10.244.5.0/24", "fd00:5::/64"})
	})
}

// runInstallScript runs the ConfigMap's install script once with env and checks the plugins it
// copied and the conflist it wrote: loadable by libcni, our plugin types, and one range set per
// wanted subnet. A second run changes nothing.
func runInstallScript(t *testing.T, script, template string, env, subnets []string) {
	t.Helper()
	bins := harness.Build(t)
	dir := t.TempDir()
	hostBin, hostConf := filepath.Join(dir, "host", "opt", "cni", "bin"), filepath.Join(dir, "host", "etc", "cni", "net.d")
	scriptPath, templatePath := filepath.Join(dir, "install.sh"), filepath.Join(dir, "template")
	if err := os.WriteFile(scriptPath, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(templatePath, []byte(template), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		cmd := exec.Command("/bin/sh", scriptPath)
		cmd.Env = append([]string{
			"PATH=" + sandboxPath, "NSNET_INSTALL_ONCE=1",
			"NSNET_SRC_BIN=" + bins.ProjectDir, "HOST_CNI_BIN_DIR=" + hostBin, "HOST_CNI_CONF_DIR=" + hostConf,
			"NSNET_CONFLIST_TEMPLATE=" + templatePath,
		}, env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("install script: %v\n%s", err, stderr.String())
		}
		return stderr.String()
	}
	run()
	for _, p := range ourPlugins {
		assertSameFile(t, filepath.Join(hostBin, p), bins.Require(t, p))
	}
	conf := filepath.Join(hostConf, "10-bridge-lite.conflist")
	list, err := libcni.ConfListFromFile(conf)
	if err != nil {
		b, _ := os.ReadFile(conf)
		t.Fatalf("libcni cannot load the written conflist: %v\n%s", err, b)
	}
	if list.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %s, want 1.0.0 (containerd 1.6)", list.CNIVersion)
	}
	for _, p := range list.Plugins {
		if !slices.Contains(ourPlugins, p.Network.Type) {
			t.Errorf("plugin type %q is not one the DaemonSet installs", p.Network.Type)
		}
	}
	var parsed struct {
		Plugins []struct {
			IPAM struct {
				Ranges [][]struct{ Subnet string } `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(list.Bytes, &parsed); err != nil || len(parsed.Plugins) == 0 {
		t.Fatalf("parsing the written conflist: %v", err)
	}
	var got []string
	for _, r := range parsed.Plugins[0].IPAM.Ranges {
		for _, sub := range r {
			if _, _, err := net.ParseCIDR(sub.Subnet); err != nil {
				t.Errorf("range subnet %q: %v", sub.Subnet, err)
			}
			got = append(got, sub.Subnet)
		}
	}
	if !slices.Equal(got, subnets) {
		t.Errorf("ranges hold %v, want %v", got, subnets)
	}
	if again := run(); again != "" {
		t.Errorf("a second run over an installed node changed something:\n%s", again)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(hostConf, "*nsnet-tmp")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

func tolerateAll(v any) bool {
	for _, t := range asList(v) {
		if dig(t, "operator") == "Exists" && dig(t, "key") == nil && dig(t, "effect") == nil {
			return true
		}
	}
	return false
}

// checkRBAC fails unless the ClusterRole allows getting nodes and is bound to service account sa.
func checkRBAC(t *testing.T, role, binding map[string]any, sa any) {
	t.Helper()
	allowed := false
	for _, r := range asList(dig(role, "rules")) {
		if slices.Contains(asList(dig(r, "apiGroups")), any("")) && slices.Contains(asList(dig(r, "resources")), any("nodes")) &&
			slices.Contains(asList(dig(r, "verbs")), any("get")) {
			allowed = true
		}
	}
	if !allowed {
		t.Errorf("the ClusterRole does not allow getting nodes: %v", dig(role, "rules"))
	}
	if dig(binding, "roleRef", "name") != dig(role, "metadata", "name") {
		t.Errorf("the binding refers to role %v", dig(binding, "roleRef", "name"))
	}
	bound := false
	for _, s := range asList(dig(binding, "subjects")) {
		if dig(s, "kind") == "ServiceAccount" && dig(s, "name") == sa {
			bound = true
		}
	}
	if !bound {
		t.Errorf("the role is not bound to service account %v", sa)
	}
}
