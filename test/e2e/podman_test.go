package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// podmanConfig selects podman's CNI backend with the sandbox's plugin and conflist dirs.
// cgroupfs, because there is no systemd to ask for scopes; file events, because there is no
// journald.
const podmanConfig = `[network]
network_backend = "cni"
cni_plugin_dirs = ["` + cniBinDir + `"]
network_config_dir = "` + cniConfDir + `"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
`

// podmanStorage keeps images and containers in the sandbox's private dirs; vfs needs no
// overlay support from the filesystem below.
const podmanStorage = `[storage]
driver = "vfs"
graphroot = "/var/lib/containers/storage"
runroot = "/run/containers/storage"
`

// podmanPolicy lets `podman load` accept the unsigned local image.
const podmanPolicy = `{"default": [{"type": "insecureAcceptAnything"}]}`

// TestPodman runs a web server with `podman run -d -p 8080:80` on podman 4.3's CNI backend and
// the shipped 87-podman-bridge-lite conflist, checks it, and removes it with `podman rm -f`.
func TestPodman(t *testing.T) {
	requireCommand(t, "podman", "conmon", "runc")
	image := busyboxImage(t)
	sc := newScenario(t)
	s := sc.Sandbox
	conf := s.installConflist(t, "87-podman-bridge-lite.conflist")
	s.writeFile(t, "/etc/containers/containers.conf", []byte(podmanConfig), 0o644)
	s.writeFile(t, "/etc/containers/storage.conf", []byte(podmanStorage), 0o644)
	s.writeFile(t, "/etc/containers/policy.json", []byte(podmanPolicy), 0o644)
	s.writeFile(t, "/etc/containers/registries.conf", nil, 0o644)
	podman := func(args ...string) (string, error) {
		return s.run(2*time.Minute, nil, append([]string{"podman"}, args...)...)
	}
	if _, err := podman("load", "--input", image); err != nil {
		t.Fatal(err)
	}

	const hostPort = 8080
	args := []string{"run", "--detach", "--name", "web", "--network", conf.Name, "--publish", fmt.Sprintf("%d:80", hostPort),
		// podman running as root raises nofile and nproc above what a test without
		// CAP_SYS_RESOURCE may set; the server needs few of either.
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		// Relative: runc resolves it against its own cgroup, which is ours, since conmon
		// (runc's parent) stays in podman's cgroup with no-conmon.
		"--cgroup-parent", sc.Cgroups.Name, "--cgroups", "no-conmon",
		imageRef}
	if _, err := podman(append(args, httpdCmd...)...); err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			_, _ = podman("rm", "--force", "--time", "0", "web")
		}
	})

	out, err := podman("inspect", "web")
	var inspect []struct {
		State struct {
			Pid int
		}
		NetworkSettings struct {
			Networks map[string]struct{ IPAddress string }
		}
	}
	if err == nil {
		err = json.Unmarshal([]byte(out), &inspect)
	}
	if err != nil || len(inspect) != 1 {
		t.Fatalf("podman inspect web: %v\n%s", err, out)
	}
	sc.Cgroups.checkProcess(t, inspect[0].State.Pid)
	exec := func(args ...string) (string, error) {
		return podman(append([]string{"exec", "web", "timeout", execTimeout}, args...)...)
	}
	containerChecks{
		Sandbox: s, Conflist: conf, IP: net.ParseIP(inspect[0].NetworkSettings.Networks[conf.Name].IPAddress), Exec: exec,
		ExtURL: sc.ExtURL, HostPort: hostPort,
	}.run(t)

	// httpd, the container's init, ignores SIGTERM; --time 0 goes straight to SIGKILL.
	if _, err := podman("rm", "--force", "--time", "0", "web"); err != nil {
		t.Fatal(err)
	}
	removed = true
	if out, err := podman("ps", "--all", "--quiet"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("containers left after podman rm: %q (%v)", out, err)
	}
	s.assertNoLeftovers(t, conf)

	calls := s.calls(t)
	logCalls(t, calls)
	for _, p := range ourPlugins {
		if adds := filterCalls(calls, p, "ADD"); len(adds) != 1 || adds[0].ContainerID == "" {
			t.Errorf("%s: want one ADD, got %v", p, adds)
		}
		if dels := filterCalls(calls, p, "DEL"); len(dels) != 1 || !dels[0].prevResult() {
			t.Errorf("%s: want one DEL with prevResult, got %v", p, dels)
		}
	}
}
