package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// DefaultPluginTimeout bounds one plugin execution, so a hung plugin fails its test instead of
// the whole run.
const DefaultPluginTimeout = 2 * time.Minute

// Invocation is one plugin call as a runtime makes it. Empty fields are left out of the
// environment entirely, so tests can check how a plugin handles a missing variable.
type Invocation struct {
	Command     string // CNI_COMMAND: ADD, DEL, CHECK, GC, STATUS, VERSION
	ContainerID string // CNI_CONTAINERID
	NetNS       string // CNI_NETNS
	IfName      string // CNI_IFNAME
	Args        string // CNI_ARGS, K=V;K=V
	Path        string // CNI_PATH, also used to find the plugin binary by name
	Env         []string
	Config      []byte // stdin
	Timeout     time.Duration
}

// PluginOutput is what a plugin execution produced.
type PluginOutput struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	// Err is the error structure the plugin printed on stdout when it failed, nil otherwise.
	Err      *types.Error
	Duration time.Duration
}

// Failed reports whether the plugin exited non-zero.
func (o *PluginOutput) Failed() bool { return o.ExitCode != 0 }

// String summarises the output for test failure messages.
func (o *PluginOutput) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", o.ExitCode, bytes.TrimSpace(o.Stdout), bytes.TrimSpace(o.Stderr))
}

// Result decodes stdout as a success result in the version it declares.
func (o *PluginOutput) Result() (types.Result, error) {
	r, err := create.CreateFromBytes(o.Stdout)
	if err != nil {
		return nil, fmt.Errorf("decoding plugin result %q: %w", o.Stdout, err)
	}
	return r, nil
}

// Result100 decodes stdout and converts it to the 1.0.0 result type, for version-neutral checks.
func (o *PluginOutput) Result100() (*types100.Result, error) {
	r, err := o.Result()
	if err != nil {
		return nil, err
	}
	r100, err := types100.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("converting result to 1.0.0: %w", err)
	}
	return r100, nil
}

// ExecPlugin runs plugin (a path, or a name looked up in inv.Path) with inv from inside the
// namespace in, the way a runtime running in that namespace would. A non-zero exit is reported
// in the output, not as an error; the error is for failures to run the plugin at all.
func ExecPlugin(in *NetNS, plugin string, inv Invocation) (*PluginOutput, error) {
	path := plugin
	if !filepath.IsAbs(plugin) {
		found, err := invoke.FindInPath(plugin, filepath.SplitList(inv.Path))
		if err != nil {
			return nil, fmt.Errorf("finding plugin %s in CNI_PATH %q: %w", plugin, inv.Path, err)
		}
		path = found
	}
	timeout := inv.Timeout
	if timeout == 0 {
		timeout = DefaultPluginTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, path)
	cmd.Env = pluginEnv(inv)
	cmd.Stdin = bytes.NewReader(inv.Config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr

	var out PluginOutput
	// The child inherits the network namespace of the locked thread that forks it.
	err := in.Do(func() error {
		start := time.Now()
		err := cmd.Run()
		out.Duration = time.Since(start)
		return err
	})
	out.Stdout, out.Stderr = stdout.Bytes(), stderr.Bytes()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return &out, fmt.Errorf("plugin %s %s timed out after %s: %s", path, inv.Command, timeout, out.String())
	case errors.As(err, &exitErr):
		out.ExitCode = exitErr.ExitCode()
		out.Err = parseError(out.Stdout)
	default:
		return &out, fmt.Errorf("running plugin %s %s in %s: %w", path, inv.Command, in.Name(), err)
	}
	return &out, nil
}

func pluginEnv(inv Invocation) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	for _, v := range []struct{ key, val string }{
		{"CNI_COMMAND", inv.Command},
		{"CNI_CONTAINERID", inv.ContainerID},
		{"CNI_NETNS", inv.NetNS},
		{"CNI_IFNAME", inv.IfName},
		{"CNI_ARGS", inv.Args},
		{"CNI_PATH", inv.Path},
	} {
		if v.val != "" {
			env = append(env, v.key+"="+v.val)
		}
	}
	return append(env, inv.Env...)
}

func parseError(stdout []byte) *types.Error {
	var e types.Error
	if err := json.Unmarshal(stdout, &e); err != nil || (e.Code == 0 && e.Msg == "") {
		return nil
	}
	return &e
}
