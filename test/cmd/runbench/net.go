package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nsnet/nsnet/test/harness"
)

// netPort is the port both sides of the -net comparison publish.
const netPort = 8080

// setupNet prepares the -net comparison inside a sandbox host netns it creates: nsnet run on
// the built-in network (an empty --cni-conf-dir) publishing a port, against the reference
// pair, cnitool add of bridge + host-local + portmap into a netns, runc run in that netns,
// cnitool del. The reference's netns is made once, untimed, which only flatters the
// reference. Every tool, its warm-up included, runs in the host netns: within is how the
// caller must run everything that starts them.
func setupNet(tmp, nsnetBin, rootfs string, deferCleanup func(func() error)) (
	tools []*tool, skipped []skip, within func(func() error) error, err error) {
	cnitool, err := harness.CnitoolPath()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("installing cnitool: %w", err)
	}
	refDir, err := harness.ReferencePluginsDir()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("installing the reference plugins: %w", err)
	}
	if err := privateCNICache(tmp, deferCleanup); err != nil {
		return nil, nil, nil, err
	}
	host, err := harness.CreateHost()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating the sandbox host netns: %w", err)
	}
	deferCleanup(host.Close)
	ctr, err := host.CreateContainer()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating the reference's container netns: %w", err)
	}
	deferCleanup(ctr.Close)
	within = host.NetNS.Do

	err = within(func() error {
		nsnet, err := newNsnetNetTool(nsnetBin, rootfs, tmp)
		if err != nil {
			return err
		}
		deferCleanup(nsnet.cleanup)
		tools = append(tools, nsnet)
		runc, err := newRuncTool(rootfs, tmp, ctr.Path(), nil)
		var s *skipError
		if errors.As(err, &s) {
			skipped = append(skipped, skip{Tool: s.tool, Reason: s.reason})
			return nil
		}
		if err != nil {
			return err
		}
		if runc.cleanup != nil {
			deferCleanup(runc.cleanup)
		}
		ref, err := newReferencePair(runc, cnitool, refDir, tmp, ctr.Path())
		if err != nil {
			return err
		}
		tools = append(tools, ref)
		return nil
	})
	return tools, skipped, within, err
}

// newNsnetNetTool runs nsnet on its built-in network, with its state in tmp.
func newNsnetNetTool(bin, rootfs, tmp string) (*tool, error) {
	state, confDir, cniRoot := filepath.Join(tmp, "nsnet-state"), filepath.Join(tmp, "nsnet-conf"), filepath.Join(tmp, "nsnet-cni")
	for _, d := range []string{state, confDir, cniRoot} {
		if err := os.Mkdir(d, 0o711); err != nil {
			return nil, err
		}
	}
	return nsnetRunTool(bin, state, "--net", "bridge-lite", "-p", fmt.Sprintf("%d:80", netPort),
		"--cni-conf-dir", confDir, "--cni-bin-dir", filepath.Dir(bin), "--cni-state-root", cniRoot,
		"--rootfs", rootfs)
}

// newReferencePair times cnitool add, runc run (the runc tool, its bundle joining netns)
// and cnitool del as one sample. The DEL runs even when runc fails.
func newReferencePair(runc *tool, cnitool, refDir, tmp, netns string) (*tool, error) {
	confDir := filepath.Join(tmp, "ref-conf")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		return nil, err
	}
	conflist := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "benchref",
		"plugins": []map[string]any{
			{"type": "bridge", "bridge": "brref0", "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
				"hairpinMode": true, "ipam": map[string]any{"type": "host-local", "subnet": "10.89.0.0/16",
					"dataDir": filepath.Join(tmp, "ref-ipam")}},
			{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	data, err := json.Marshal(conflist)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-benchref.conflist"), data, 0o644); err != nil {
		return nil, err
	}
	capArgs := fmt.Sprintf(`{"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]}`, netPort)
	cni := func(ctx context.Context, verb string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, cnitool, verb, "benchref", netns)
		cmd.Env = append(os.Environ(), "CNI_PATH="+refDir, "NETCONFPATH="+confDir, "CAP_ARGS="+capArgs)
		return cmd
	}
	t := &tool{
		name:    "runc+cnitool",
		version: runc.version + ", cnitool " + harness.CnitoolVersion + ", plugins " + harness.ReferencePluginsVersion,
		commands: func(ctx context.Context, id string) []*exec.Cmd {
			return []*exec.Cmd{cni(ctx, "add"), runc.command(ctx, id), cni(ctx, "del")}
		},
		after: runc.after,
	}
	if _, err := t.run(context.Background(), "warmup"); err != nil {
		return nil, fmt.Errorf("reference warm-up run: %w", err)
	}
	return t, nil
}

// privateCNICache puts an empty directory over libcni's default cache, /var/lib/cni, in this
// private mount namespace: cnitool has no flag for it, and the benchmark must not write there.
// A fresh machine has no /var/lib/cni: the mount point is then made here and removed at the
// end (the mount itself goes with the namespace).
func privateCNICache(tmp string, deferCleanup func(func() error)) error {
	const cache = "/var/lib/cni"
	if _, err := os.Stat(cache); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(cache, 0o755); err != nil {
			return fmt.Errorf("creating the mount point %s: %w", cache, err)
		}
		deferCleanup(func() error {
			if err := syscall.Unmount(cache, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
				return fmt.Errorf("unmounting %s: %w", cache, err)
			}
			return os.Remove(cache)
		})
	} else if err != nil {
		return err
	}
	mnt, ok := mountPointOf(cache)
	if !ok || !isPrivateMount(mnt) {
		return fmt.Errorf("refusing to mount over %s: its mount %s is not private in this mount namespace", cache, mnt)
	}
	dir := filepath.Join(tmp, "cni-cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := syscall.Mount(dir, cache, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("mounting a private CNI cache over %s: %w", cache, err)
	}
	return nil
}

// mountPointOf is the mount point holding path: the longest one that is path or above it.
func mountPointOf(path string) (string, bool) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	best := ""
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := fields[4]
		if (path == mp || mp == "/" || strings.HasPrefix(path, mp+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	return best, best != ""
}
