package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/nsnet/nsnet/test/harness"
)

// libcniOpEnv, when set, makes the test binary a libcni client instead of running tests: the
// scenarios start it inside a sandbox to send what newer runtimes send on top of what the
// installed client does (CHECK with the client's cached result, a DEL after the cache is gone).
// The other libcni* variables say what to act on.
const (
	libcniOpEnv          = "NSNET_E2E_LIBCNI_OP"
	libcniConflistEnv    = "NSNET_E2E_LIBCNI_CONFLIST"
	libcniContainerIDEnv = "NSNET_E2E_LIBCNI_CONTAINERID"
	libcniNetNSEnv       = "NSNET_E2E_LIBCNI_NETNS"
	libcniIfNameEnv      = "NSNET_E2E_LIBCNI_IFNAME"
	// libcniCacheDir is libcni's default result cache, where containerd keeps its results.
	libcniCacheDir = "/var/lib/cni"
)

func TestMain(m *testing.M) {
	if op := os.Getenv(libcniOpEnv); op != "" {
		if err := libcniClient(op); err != nil {
			fmt.Fprintf(os.Stderr, "libcni %s: %v\n", op, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := harness.Main(m)
	removeImage()
	os.Exit(code)
}

func libcniClient(op string) error {
	list, err := libcni.ConfListFromFile(os.Getenv(libcniConflistEnv))
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{cniBinDir}, libcniCacheDir, nil)
	rt := &libcni.RuntimeConf{
		ContainerID: os.Getenv(libcniContainerIDEnv),
		NetNS:       os.Getenv(libcniNetNSEnv),
		IfName:      os.Getenv(libcniIfNameEnv),
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch op {
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	case "cached":
		res, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			return err
		}
		if res == nil {
			return fmt.Errorf("no cached result")
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	return fmt.Errorf("unknown operation %q", op)
}

// libcni runs the test binary as a libcni client inside the sandbox (see libcniOpEnv).
func (s *sandbox) libcni(op, conflist, containerID, netns, ifName string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return s.run(time.Minute, []string{
		libcniOpEnv + "=" + op,
		libcniConflistEnv + "=" + filepath.Join(cniConfDir, conflist),
		libcniContainerIDEnv + "=" + containerID,
		libcniNetNSEnv + "=" + netns,
		libcniIfNameEnv + "=" + ifName,
	}, exe)
}

// scenario is what every client scenario starts from.
type scenario struct {
	Bins    *harness.Binaries
	Host    *harness.Host
	Cgroups *cgroupScope
	Sandbox *sandbox
	ExtURL  string
	start   time.Time
}

// newScenario checks the machine is left unchanged, then creates a sandbox host with a whoami
// server in its outside world, a cgroup scope and a sandbox with our plugins installed.
// Cleanups run in reverse: the sandbox's processes go first, then cgroups, then the host, and
// the machine check comes last.
func newScenario(t *testing.T, extraPlugins ...string) *scenario {
	t.Helper()
	harness.RequireRoot(t)
	sc := &scenario{start: time.Now()}
	t.Cleanup(func() { t.Logf("scenario took %s, cleanup included", time.Since(sc.start).Round(time.Millisecond)) })
	sc.Bins = harness.Build(t)
	checkMachineUnchanged(t)
	sc.Host = harness.NewHost(t)
	sc.ExtURL = startExtWhoami(t, sc.Host)
	sc.Cgroups = newCgroupScope(t)
	sc.Sandbox = newSandbox(t, sc.Host)
	sc.Sandbox.installPlugins(t, sc.Bins, extraPlugins...)
	return sc
}

// requireCommand skips the test when a client the scenario drives is not installed where the
// sandbox looks for it.
func requireCommand(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		installed := func(dir string) bool {
			_, err := exec.LookPath(filepath.Join(dir, n))
			return err == nil
		}
		if !slices.ContainsFunc(filepath.SplitList(sandboxPath), installed) {
			t.Skipf("%s is not installed (make deps installs it)", n)
		}
	}
}
