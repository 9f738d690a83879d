package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// runTimeout bounds one run of a tool; /bin/true takes milliseconds.
const runTimeout = 30 * time.Second

// tool is one way of starting /bin/true in the rootfs.
type tool struct {
	name    string
	version string
	// command is the timed invocation; id is unique per run.
	command func(ctx context.Context, id string) *exec.Cmd
	// commands, when set instead, are timed together, run one after the other; all run
	// even when one fails, so what an earlier one set up is torn down.
	commands func(ctx context.Context, id string) []*exec.Cmd
	// after runs untimed once the command exited, to make sure nothing of run id remains.
	after func(id string) error
	// cleanup runs once at the end.
	cleanup func() error
	// floor marks a reference that is not a runtime: the report compares it with the
	// runtimes instead of nsnet with it.
	floor bool
}

// run times one whole invocation, fork/exec to exit (of the last, for a sequence).
func (t *tool) run(ctx context.Context, id string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	var cmds []*exec.Cmd
	if t.commands != nil {
		cmds = t.commands(ctx, id)
	} else {
		cmds = []*exec.Cmd{t.command(ctx, id)}
	}
	var out bytes.Buffer
	for _, cmd := range cmds {
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = 5 * time.Second
	}
	var errs []error
	start := time.Now()
	for _, cmd := range cmds {
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err))
		}
	}
	d := time.Since(start)
	var afterErr error
	if t.after != nil {
		afterErr = t.after(id)
	}
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", t.name, err, out.String())
	}
	if afterErr != nil {
		return 0, fmt.Errorf("%s after run %s: %w", t.name, id, afterErr)
	}
	return d, nil
}

func newNsnetTool(bin, rootfs, state string, flags ...string) (*tool, error) {
	if err := os.Mkdir(state, 0o711); err != nil {
		return nil, err
	}
	return nsnetRunTool(bin, state, append([]string{"--net", "none", "--rootfs", rootfs}, flags...)...)
}

// The limits of -limits, for nsnet's flags and runc's linux.resources alike.
var (
	limitFlags     = []string{"--memory", "64m", "--cpus", "1", "--pids-limit", "100"}
	limitResources = map[string]any{
		"memory": map[string]any{"limit": 64 << 20},
		"cpu":    map[string]any{"quota": 100000, "period": 100000},
		"pids":   map[string]any{"limit": 100},
	}
)

// nsnetRunTool times `nsnet run --rm FLAGS -- /bin/true` with its state in
// state, which must be empty again after every run, and makes one warm-up
// run.
func nsnetRunTool(bin, state string, flags ...string) (*tool, error) {
	args := append(append([]string{"run", "--rm"}, flags...), "--", "/bin/true")
	t := &tool{
		name:    "nsnet",
		version: "this tree",
		command: func(ctx context.Context, _ string) *exec.Cmd {
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(os.Environ(), "NSNET_ROOT="+state)
			return cmd
		},
		cleanup: func() error {
			entries, err := os.ReadDir(state)
			if err != nil {
				return err
			}
			if len(entries) > 0 {
				return fmt.Errorf("nsnet left state behind in %s (%d entries) despite --rm", state, len(entries))
			}
			return nil
		},
	}
	if _, err := t.run(context.Background(), "warmup"); err != nil {
		return nil, fmt.Errorf("warm-up run: %w", err)
	}
	return t, nil
}

// newRuncTool runs runc with a temp --root, its bundle's cgroupsPath relative: runc then
// places the container below its own (this process's) cgroup in every hierarchy. A
// first run prints the container's /proc/self/cgroup to prove it before any timed run.
// With netns set the container joins that network namespace instead of making one;
// resources become the bundle's linux.resources (limits).
func newRuncTool(rootfs, dir, netns string, resources map[string]any) (*tool, error) {
	bin, err := exec.LookPath("runc")
	if err != nil {
		return nil, &skipError{"runc", "not installed (make bench-deps)"}
	}
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	cgName := "nsnet-bench-" + randHex(6)
	leftovers, err := cgroupDirs(own, cgName)
	if err != nil {
		return nil, &skipError{"runc", fmt.Sprintf("cannot locate the cgroup it would create: %v", err)}
	}
	bundle, state := filepath.Join(dir, "runc-bundle"), filepath.Join(dir, "runc-state")
	if err := makeBundle(bin, bundle, rootfs, cgName, netns, resources, []string{"/bin/cat", "/proc/self/cgroup"}); err != nil {
		return nil, err
	}
	t := &tool{
		name:    "runc",
		version: firstLine(bin, "--version"),
		command: func(ctx context.Context, id string) *exec.Cmd {
			return exec.CommandContext(ctx, bin, "--root", state, "run", "--bundle", bundle, id)
		},
		after: func(id string) error {
			return errors.Join(deleteContainer(bin, state, id), removeLeftovers(leftovers))
		},
		cleanup: func() error { return removeLeftovers(leftovers) },
	}
	out, err := runOnce(t, "probe")
	if err != nil {
		return nil, &skipError{"runc", err.Error()}
	}
	if err := checkBelow(own, out); err != nil {
		return nil, &skipError{"runc", fmt.Sprintf("container cgroup not below ours: %v", err)}
	}
	if err := makeBundle(bin, bundle, rootfs, cgName, netns, resources, []string{"/bin/true"}); err != nil {
		return nil, err
	}
	if _, err := t.run(context.Background(), "warmup"); err != nil {
		return nil, &skipError{"runc", err.Error()}
	}
	return t, nil
}

// newCrunTool runs crun with a temp --root and no cgroup manager: crun then creates no
// cgroup at all.
func newCrunTool(rootfs, dir string) (*tool, error) {
	bin, err := exec.LookPath("crun")
	if err != nil {
		return nil, &skipError{"crun", "not installed (make bench-deps)"}
	}
	bundle, state := filepath.Join(dir, "crun-bundle"), filepath.Join(dir, "crun-state")
	if err := makeBundle(bin, bundle, rootfs, "", "", nil, []string{"/bin/true"}); err != nil {
		return nil, err
	}
	t := &tool{
		name:    "crun",
		version: firstLine(bin, "--version"),
		command: func(ctx context.Context, id string) *exec.Cmd {
			return exec.CommandContext(ctx, bin, "--root", state, "--cgroup-manager=disabled", "run", "--bundle", bundle, id)
		},
		after: func(id string) error { return deleteContainer(bin, state, id) },
	}
	if _, err := t.run(context.Background(), "warmup"); err != nil {
		return nil, &skipError{"crun", err.Error()}
	}
	return t, nil
}

// newBwrapTool runs bwrap with every namespace it can make (a new netns included), the
// rootfs bound as /, a fresh /proc and /dev, no capabilities and a new session: the
// closest it comes to a hardened container.
func newBwrapTool(rootfs, _ string) (*tool, error) {
	bin, err := exec.LookPath("bwrap")
	if err != nil {
		return nil, &skipError{"bwrap", "not installed (make bench-deps)"}
	}
	t := &tool{
		name:    "bwrap",
		version: firstLine(bin, "--version"),
		command: func(ctx context.Context, _ string) *exec.Cmd {
			return exec.CommandContext(ctx, bin, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
				"--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true")
		},
	}
	if _, err := t.run(context.Background(), "warmup"); err != nil {
		return nil, &skipError{"bwrap", err.Error()}
	}
	return t, nil
}

// makeBundle writes an OCI bundle from the runtime's default spec: the rootfs writable,
// args without a terminal, the given cgroupsPath ("" leaves it unset), the network
// namespace at netns ("": a new one) and, when set, resources as linux.resources.
func makeBundle(bin, bundle, rootfs, cgroupsPath, netns string, resources map[string]any, args []string) error {
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return err
	}
	cfgPath := filepath.Join(bundle, "config.json")
	if err := os.Remove(cfgPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if out, err := exec.Command(bin, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		return fmt.Errorf("%s spec: %w\n%s", bin, err, out)
	}
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return fmt.Errorf("decoding %s: %w", cfgPath, err)
	}
	spec["root"] = map[string]any{"path": rootfs, "readonly": false}
	process, ok1 := spec["process"].(map[string]any)
	linux, ok2 := spec["linux"].(map[string]any)
	if !ok1 || !ok2 {
		return fmt.Errorf("%s: default spec without process or linux section", cfgPath)
	}
	process["args"] = args
	process["terminal"] = false
	delete(linux, "cgroupsPath")
	if cgroupsPath != "" {
		linux["cgroupsPath"] = cgroupsPath
	}
	if resources != nil {
		linux["resources"] = resources
	}
	if netns != "" {
		namespaces, _ := linux["namespaces"].([]any)
		for _, n := range namespaces {
			if m, ok := n.(map[string]any); ok && m["type"] == "network" {
				m["path"] = netns
			}
		}
	}
	if data, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		return err
	}
	return os.WriteFile(cfgPath, data, 0o644)
}

// runOnce runs a tool untimed and returns its output.
func runOnce(t *tool, id string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := t.command(ctx, id)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	afterErr := t.after(id)
	if err != nil {
		return "", fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return string(out), afterErr
}

// deleteContainer removes what is left of a container; runc and crun already destroy a
// foreground container when it exits, and delete -f of an absent one succeeds.
func deleteContainer(bin, state, id string) error {
	if out, err := exec.Command(bin, "--root", state, "delete", "-f", id).CombinedOutput(); err != nil {
		return fmt.Errorf("%s delete -f %s: %w\n%s", filepath.Base(bin), id, err, out)
	}
	return nil
}

func firstLine(bin string, args ...string) string {
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
