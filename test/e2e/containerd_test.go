package e2e

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// containerdSocket is containerd's default address, inside the sandbox's private /run.
const containerdSocket = "/run/containerd/containerd.sock"

// containerdConfig keeps containerd's root, state and socket in the sandbox's private dirs. The
// CRI plugin is configured the way a kubenet-like node would be (runc with cgroupfs, our
// plugins and conflist dirs) except that its pause image is the local test image; the ctr
// scenario disables it.
const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [%s]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # Lowering oom_score_adj below the daemon's needs CAP_SYS_RESOURCE, which a test may lack.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`

// startContainerd starts containerd inside the sandbox (in the test's cgroup; it is never moved)
// and waits until it answers; it is stopped when the test ends.
func startContainerd(t *testing.T, s *sandbox, withCRI bool) {
	t.Helper()
	disabled := `"io.containerd.grpc.v1.cri"`
	if withCRI {
		disabled = ""
	}
	const path = "/etc/containerd/config.toml"
	s.writeFile(t, path, fmt.Appendf(nil, containerdConfig, disabled, containerdSocket, imageRef, cniBinDir, cniConfDir), 0o644)
	d := s.startDaemon(t, "containerd", "containerd", "--config", path)
	err := waitFor(30*time.Second, func() error {
		if !d.running() {
			return fmt.Errorf("containerd exited")
		}
		_, err := s.ctr("default", 10*time.Second, "version")
		return err
	})
	if err != nil {
		t.Fatalf("containerd did not come up: %v", err)
	}
}

// ctrArgs is the command line of ctr args against the sandbox's containerd in namespace ns.
func ctrArgs(ns string, args ...string) []string {
	return append([]string{"ctr", "--address", containerdSocket, "--namespace", ns}, args...)
}

// ctr runs ctr against the sandbox's containerd in namespace ns.
func (s *sandbox) ctr(ns string, timeout time.Duration, args ...string) (string, error) {
	return s.run(timeout, nil, ctrArgs(ns, args...)...)
}

var inetRE = regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`)

// containerIPv4 reads the IPv4 address of eth0 through exec.
func containerIPv4(exec execFunc) (net.IP, error) {
	out, err := exec("ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		return nil, err
	}
	m := inetRE.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no IPv4 address on eth0: %q", strings.TrimSpace(out))
	}
	return net.ParseIP(m[1]), nil
}
