package cninet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// earlyStartable are the plugins a chain may execute before their turn:
// nsnet's own, which read their whole configuration from stdin before they
// do anything, lock anything or write anything. A plugin that took a lock
// while waiting for its configuration could deadlock the plugin before it.
var earlyStartable = map[string]bool{"bridge-lite": true, "portmap-lite": true}

// pipelined is the invoke.Exec of one ADD, CHECK or DEL of a network list.
// It runs each plugin as libcni's default executor does, in the same order
// and with the same input, but executes the next plugin of the chain while
// the current one still runs, holding it at the read of its configuration
// until the current one has succeeded and libcni passes that
// configuration (with the current plugin's result as prevResult) on. The
// next plugin's exec and runtime start, a few milliseconds for a Go
// plugin, then overlap the current plugin's work, much of which is waiting
// for the kernel (an RCU grace period when a veth or nftables objects are
// deleted). Close must be called once the chain is done: a plugin started
// early but not needed, because one before it failed, is killed there
// before it read anything.
type pipelined struct {
	// PluginDecoder decodes a plugin's VERSION output, as in libcni's
	// default executor.
	version.PluginDecoder
	// plan holds the plugins still to run, in order; empty once a call
	// did not match it.
	plan    []planned
	binDirs []string
	early   *run
}

type planned struct {
	plugin, path string
	startEarly   bool
}

// newPipelined plans the chain of plugins in order: each is found in
// binDirs as libcni finds it.
func newPipelined(plugins []*libcni.PluginConfig, binDirs []string) *pipelined {
	p := &pipelined{binDirs: binDirs}
	for _, pc := range plugins {
		path, err := invoke.FindInPath(pc.Network.Type, binDirs)
		if err != nil {
			// libcni fails on this plugin; nothing after it runs.
			break
		}
		p.plan = append(p.plan, planned{plugin: pc.Network.Type, path: path, startEarly: earlyStartable[pc.Network.Type]})
	}
	return p
}

// reversed is the DEL order of plugins: last added first.
func reversed(plugins []*libcni.PluginConfig) []*libcni.PluginConfig {
	out := slices.Clone(plugins)
	slices.Reverse(out)
	return out
}

// run is one execution of a plugin.
type run struct {
	path    string
	environ []string
	cmd     *exec.Cmd
	stdin   *os.File // the write end; the plugin reads the other
	stdout  bytes.Buffer
	stderr  bytes.Buffer
}

// ExecPlugin runs the plugin at pluginPath with stdinData as its
// configuration, as invoke.RawExec does.
func (p *pipelined) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	r := p.takeEarly(pluginPath, environ)
	if len(p.plan) > 0 && p.plan[0].path == pluginPath {
		p.plan = p.plan[1:]
	} else {
		p.plan = nil
	}
	if r == nil {
		var err error
		if r, err = startWithRetry(ctx, pluginPath, environ); err != nil {
			p.Close()
			return nil, pluginErr(err, nil, nil)
		}
	}
	if len(p.plan) > 0 && p.plan[0].startEarly {
		// A failed early start is retried in its turn.
		p.early, _ = start(ctx, p.plan[0].path, environ)
	}
	out, err := r.finish(stdinData)
	if err != nil {
		// libcni runs nothing after a failed plugin.
		p.Close()
		return nil, err
	}
	// What a plugin that succeeded wrote to stderr is informational.
	if r.stderr.Len() > 0 {
		_, _ = r.stderr.WriteTo(os.Stderr)
	}
	return out, nil
}

// takeEarly returns the plugin started early when it is the one asked for,
// with the same environment; an early plugin that is not is killed.
func (p *pipelined) takeEarly(path string, environ []string) *run {
	r := p.early
	p.early = nil
	if r == nil {
		return nil
	}
	if r.path == path && sameEnv(r.environ, environ) {
		return r
	}
	r.kill()
	return nil
}

// sameEnv reports whether two environments hold the same variables;
// libcni builds each call's from a map, in no particular order.
func sameEnv(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Close kills the plugin started early, if any.
func (p *pipelined) Close() {
	if p.early != nil {
		p.early.kill()
		p.early = nil
	}
	p.plan = nil
}

// FindInPath finds a plugin as libcni's default executor does. libcni asks
// for each plugin just before it runs it, and newPipelined found that one
// already.
func (p *pipelined) FindInPath(plugin string, paths []string) (string, error) {
	if len(p.plan) > 0 && p.plan[0].plugin == plugin && slices.Equal(paths, p.binDirs) {
		return p.plan[0].path, nil
	}
	return invoke.FindInPath(plugin, paths)
}

// startWithRetry starts a plugin, retrying for a while when its binary is
// still being written (ETXTBSY), as invoke.RawExec does.
func startWithRetry(ctx context.Context, path string, environ []string) (*run, error) {
	for attempt := 0; ; attempt++ {
		r, err := start(ctx, path, environ)
		if err == nil || attempt == 5 || !errors.Is(err, unix.ETXTBSY) {
			return r, err
		}
		time.Sleep(time.Second)
	}
}

// start executes a plugin that waits for its configuration on stdin.
func start(ctx context.Context, path string, environ []string) (*run, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	r := &run{path: path, environ: environ, stdin: wr}
	r.cmd = exec.CommandContext(ctx, path)
	r.cmd.Env = environ
	r.cmd.Stdin = rd
	r.cmd.Stdout = &r.stdout
	r.cmd.Stderr = &r.stderr
	err = r.cmd.Start()
	rd.Close()
	if err != nil {
		wr.Close()
		return nil, err
	}
	return r, nil
}

// finish hands the plugin its configuration and waits for it to exit.
func (r *run) finish(stdinData []byte) ([]byte, error) {
	_, werr := r.stdin.Write(stdinData)
	r.stdin.Close()
	err := r.cmd.Wait()
	// A plugin that exits without reading all of stdin breaks the pipe,
	// which os/exec ignores as well.
	if err == nil && werr != nil && !errors.Is(werr, unix.EPIPE) {
		err = fmt.Errorf("writing the configuration of %s: %w", r.path, werr)
	}
	if err != nil {
		return nil, pluginErr(err, r.stdout.Bytes(), r.stderr.Bytes())
	}
	return r.stdout.Bytes(), nil
}

// kill stops a plugin that has not been given its configuration: it is
// still reading it and has done nothing.
func (r *run) kill() {
	_ = r.cmd.Process.Kill()
	r.stdin.Close()
	_ = r.cmd.Wait()
}

// pluginErr turns a failed run into the CNI error the plugin printed, as
// invoke.RawExec does.
func pluginErr(err error, stdout, stderr []byte) error {
	emsg := types.Error{}
	switch {
	case len(stdout) == 0 && len(stderr) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	case len(stdout) == 0:
		emsg.Msg = fmt.Sprintf("netplugin failed: %q: %v", string(stderr), err)
	default:
		if perr := json.Unmarshal(stdout, &emsg); perr != nil {
			emsg.Msg = fmt.Sprintf("netplugin failed but error parsing its diagnostic message %q: %v", string(stdout), perr)
		}
	}
	return &emsg
}

// addList, checkList and delList run ADD, CHECK and DEL of a chain as
// libcni does, with its plugins pipelined.
func (n *Network) addList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	p := newPipelined(list.Plugins, n.BinDirs)
	defer p.Close()
	return n.withExec(p).AddNetworkList(ctx, list, rt)
}

func (n *Network) checkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	p := newPipelined(list.Plugins, n.BinDirs)
	defer p.Close()
	return n.withExec(p).CheckNetworkList(ctx, list, rt)
}

func (n *Network) delList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	p := newPipelined(reversed(list.Plugins), n.BinDirs)
	defer p.Close()
	return n.withExec(p).DelNetworkList(ctx, list, rt)
}

// withExec is the network's libcni runtime with another executor.
func (n *Network) withExec(e invoke.Exec) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir(n.BinDirs, n.CacheDir, e)
}

var _ invoke.Exec = (*pipelined)(nil)
