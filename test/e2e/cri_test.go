package e2e

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// crictl drives containerd's CRI plugin the way kubelet does.
const (
	crictlPackage = "sigs.k8s.io/cri-tools/cmd/crictl"
	crictlVersion = "v1.37.0"
)

// installCrictl installs crictl into the harness's per-user cache once per test binary
// (harness.GoInstall keeps it between runs and serialises test binaries).
var installCrictl = sync.OnceValues(func() (string, error) {
	dir, err := harness.GoInstall("crictl-"+crictlVersion, []string{crictlPackage + "@" + crictlVersion}, "GOFLAGS=-mod=mod")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "crictl"), nil
})

// crictlPath returns crictl's path and skips the test when it cannot be installed (no Go module
// proxy).
func crictlPath(t *testing.T) string {
	t.Helper()
	p, err := installCrictl()
	if err != nil {
		t.Skipf("crictl %s cannot be installed: %v", crictlVersion, err)
	}
	return p
}

// criConfig is what crictl reads from /etc/crictl.yaml inside the sandbox.
const criConfig = "runtime-endpoint: unix://" + containerdSocket + "\nimage-endpoint: unix://" + containerdSocket + "\ntimeout: 60\n"

// TestContainerdCRI runs a pod through containerd 1.6's CRI plugin with crictl, the way kubelet
// does, on the shipped 10-bridge-lite conflist: RunPodSandbox (pause image: the local test
// image) with a hostPort, a web server container in the pod, reachability, then
// StopPodSandbox twice and RemovePodSandbox, as kubelet does. CRI sends port mappings with
// capitalised keys (go-cni's struct has no JSON tags) and runs the plugins from the daemon.
// CHECK, which containerd 1.6 never sends but newer runtimes do, is sent through libcni with
// the result containerd cached; after the pod is gone, a DEL without prevResult follows.
func TestContainerdCRI(t *testing.T) {
	requireCommand(t, "containerd", "ctr", "runc", "containerd-shim-runc-v2")
	image := busyboxImage(t)
	crictl := crictlPath(t)
	// containerd's CRI sets up the pod's loopback through the loopback plugin.
	sc := newScenario(t, "loopback")
	s := sc.Sandbox
	conf := s.installConflist(t, "10-bridge-lite.conflist")
	s.writeFile(t, "/etc/crictl.yaml", []byte(criConfig), 0o644)
	startContainerd(t, s, true)
	if _, err := s.ctr("k8s.io", 2*time.Minute, "images", "import", image); err != nil {
		t.Fatal(err)
	}
	cri := func(args ...string) (string, error) {
		return s.run(2*time.Minute, nil, append([]string{crictl}, args...)...)
	}
	err := waitFor(30*time.Second, func() error {
		_, err := cri("inspecti", imageRef)
		return err
	})
	if err != nil {
		t.Fatalf("CRI does not see the imported image: %v", err)
	}

	const hostPort = 8080
	pod := map[string]any{
		"metadata":      map[string]any{"name": "web", "namespace": "nsnet-e2e", "uid": sc.Cgroups.Name, "attempt": 0},
		"hostname":      "web",
		"log_directory": "/run/nsnet-e2e/pods",
		// protocol 0 is TCP in the CRI enum.
		"port_mappings": []map[string]any{{"protocol": 0, "container_port": 80, "host_port": hostPort}},
		// Relative: runc resolves it against its own cgroup, which is ours.
		"linux": map[string]any{"cgroup_parent": sc.Cgroups.Name},
	}
	ctr := map[string]any{
		"metadata": map[string]any{"name": "httpd"},
		"image":    map[string]any{"image": imageRef},
		"command":  httpdCmd,
		"log_path": "httpd.log",
		"linux":    map[string]any{},
	}
	podJSON, ctrJSON := writeJSON(t, s, "/run/nsnet-e2e/pod.json", pod), writeJSON(t, s, "/run/nsnet-e2e/container.json", ctr)

	out, err := cri("runp", podJSON)
	if err != nil {
		t.Fatal(err)
	}
	podID := strings.TrimSpace(out)
	removed := false
	t.Cleanup(func() {
		if !removed {
			_, _ = cri("stopp", podID)
			_, _ = cri("rmp", "--force", podID)
		}
	})
	out, err = cri("create", podID, ctrJSON, podJSON)
	if err != nil {
		t.Fatal(err)
	}
	ctrID := strings.TrimSpace(out)
	if _, err := cri("start", ctrID); err != nil {
		t.Fatal(err)
	}

	var status struct {
		Status struct {
			Network struct{ IP string } `json:"network"`
		} `json:"status"`
		Info struct{ PID int } `json:"info"`
	}
	out, err = cri("inspectp", "--output", "json", podID)
	if err == nil {
		err = json.Unmarshal([]byte(out), &status)
	}
	if err != nil {
		t.Fatalf("inspecting the pod: %v\n%s", err, out)
	}
	sc.Cgroups.checkProcess(t, status.Info.PID)
	exec := func(args ...string) (string, error) {
		return cri(append([]string{"exec", ctrID, "timeout", execTimeout}, args...)...)
	}
	containerChecks{
		Sandbox: s, Conflist: conf, IP: net.ParseIP(status.Status.Network.IP), Exec: exec,
		ExtURL: sc.ExtURL, HostPort: hostPort,
	}.run(t)

	adds := filterCalls(s.calls(t), "bridge-lite", "ADD")
	if len(adds) != 1 {
		t.Fatalf("want one bridge-lite ADD, got %v", adds)
	}
	add := adds[0]
	if _, err := s.libcni("check", "10-bridge-lite.conflist", add.ContainerID, add.NetNS, add.IfName); err != nil {
		t.Errorf("CHECK with containerd's cached result: %v", err)
	}

	for _, step := range [][]string{{"stop", ctrID}, {"rm", ctrID}, {"stopp", podID}, {"stopp", podID}, {"rmp", podID}} {
		if _, err := cri(step...); err != nil {
			t.Fatal(err)
		}
	}
	removed = true
	if _, err := s.libcni("del", "10-bridge-lite.conflist", add.ContainerID, add.NetNS, add.IfName); err != nil {
		t.Errorf("DEL after the pod was removed (no cached result, so no prevResult): %v", err)
	}
	s.assertNoLeftovers(t, conf)

	calls := s.calls(t)
	logCalls(t, calls)
	pmAdds := filterCalls(calls, "portmap-lite", "ADD")
	if len(pmAdds) != 1 {
		t.Errorf("want one portmap-lite ADD, got %v", pmAdds)
	} else if rc, _ := pmAdds[0].Config["runtimeConfig"].(map[string]any); !capitalisedPortMapping(rc) {
		t.Errorf("containerd's CRI sent portMappings without capitalised keys, the case this scenario covers: %v", rc)
	}
	for _, p := range ourPlugins {
		dels := filterCalls(calls, p, "DEL")
		if len(dels) < 2 || !dels[0].prevResult() || dels[len(dels)-1].prevResult() {
			t.Errorf("%s: want a DEL with prevResult first and one without last, got %v", p, dels)
		}
		if checks := filterCalls(calls, p, "CHECK"); len(checks) != 1 || !checks[0].prevResult() {
			t.Errorf("%s: want one CHECK with prevResult, got %v", p, checks)
		}
	}
}

// capitalisedPortMapping reports whether runtimeConfig holds a port mapping spelled the way
// go-cni marshals it ("HostPort", not "hostPort").
func capitalisedPortMapping(rc map[string]any) bool {
	pms, _ := rc["portMappings"].([]any)
	if len(pms) == 0 {
		return false
	}
	pm, _ := pms[0].(map[string]any)
	_, ok := pm["HostPort"]
	return ok
}

// writeJSON writes v as JSON to p inside the sandbox and returns p.
func writeJSON(t *testing.T, s *sandbox, p string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	s.writeFile(t, p, b, 0o644)
	return p
}
