package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/test/harness"
)

// step is one plugin of a network's chain.
type step struct {
	binary string
	conf   map[string]any // its network configuration, without prevResult and runtimeConfig
	// portMappings says the plugin has the portMappings capability: the runtime puts the
	// attachment's mappings into runtimeConfig.
	portMappings bool
}

// stdin is the step's configuration for one call: prevResult (when there is one) and the
// attachment's port mapping added, as libcni adds them.
func (s step) stdin(prev []byte, hostPort int) ([]byte, error) {
	conf := make(map[string]any, len(s.conf)+2)
	for k, v := range s.conf {
		conf[k] = v
	}
	if prev != nil {
		conf["prevResult"] = json.RawMessage(prev)
	}
	if s.portMappings {
		conf["runtimeConfig"] = map[string]any{"portMappings": []map[string]any{
			{"hostPort": hostPort, "containerPort": 80, "protocol": "tcp"},
		}}
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, fmt.Errorf("encoding %s config: %w", s.binary, err)
	}
	return b, nil
}

// plugin is one network under test (a single plugin or a chain) in its own sandbox host, with
// the attachments made so far.
type plugin struct {
	label   string
	steps   []step
	host    *harness.Host
	cniPath string
	netns   *netnsDir
	prefix  string

	attached []attachment
	measure  string // container netns reused by every measured ADD+DEL
}

type attachment struct {
	id, netns string
	hostPort  int
	result    []byte // the last plugin's ADD result; nil when ADD failed
}

// measurePort is the host port of the measured attachments; the populated ones use
// populatePort+i, so the two never meet.
const (
	measurePort  = 9999
	populatePort = 10000
)

func (p *plugin) call(binary, command, id, netnsPath string, conf []byte) (*harness.PluginOutput, error) {
	out, err := harness.ExecPlugin(p.host.NetNS, binary, harness.Invocation{
		Command: command, ContainerID: id, NetNS: netnsPath, IfName: "eth0", Path: p.cniPath, Config: conf,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %s %s %s: %w", p.label, binary, command, id, err)
	}
	if out.Failed() {
		return out, fmt.Errorf("%s: %s %s %s failed: %s", p.label, binary, command, id, out)
	}
	return out, nil
}

// add runs ADD through every step in order, each getting the previous one's result, as
// libcni does. The time is the sum of the plugin executions.
func (p *plugin) add(id, netnsPath string, hostPort int) (attachment, time.Duration, error) {
	a := attachment{id: id, netns: netnsPath, hostPort: hostPort}
	var total time.Duration
	var prev []byte
	for _, s := range p.steps {
		conf, err := s.stdin(prev, hostPort)
		if err != nil {
			return a, 0, err
		}
		out, err := p.call(s.binary, "ADD", id, netnsPath, conf)
		if err != nil {
			return a, 0, err
		}
		total += out.Duration
		prev = out.Stdout
	}
	a.result = prev
	return a, total, nil
}

// del runs DEL through the steps in reverse order, each with the chain's ADD result as
// prevResult, as libcni does with its cached result.
func (p *plugin) del(a attachment) (time.Duration, error) {
	var total time.Duration
	for i := len(p.steps) - 1; i >= 0; i-- {
		s := p.steps[i]
		conf, err := s.stdin(a.result, a.hostPort)
		if err != nil {
			return 0, err
		}
		out, err := p.call(s.binary, "DEL", a.id, a.netns, conf)
		if err != nil {
			return 0, err
		}
		total += out.Duration
	}
	return total, nil
}

// populate ADDs containers until n attachments exist.
func (p *plugin) populate(ctx context.Context, n int) error {
	for i := len(p.attached); i < n; i++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		nsPath, err := p.netns.create(p.prefix + "-" + strconv.Itoa(i))
		if err != nil {
			return err
		}
		a, _, err := p.add(p.prefix+"-"+strconv.Itoa(i), nsPath, populatePort+i)
		if err != nil {
			return err
		}
		p.attached = append(p.attached, a)
	}
	return nil
}

// addDel measures one ADD and the DEL of the same attachment, in a container netns kept for it.
func (p *plugin) addDel(id string) (sample, error) {
	if p.measure == "" {
		nsPath, err := p.netns.create(p.prefix + "-measure")
		if err != nil {
			return sample{}, err
		}
		p.measure = nsPath
	}
	a, addTime, err := p.add(p.prefix+"-"+id, p.measure, measurePort)
	if err != nil {
		// A failed ADD is still followed by a DEL, as the spec asks of runtimes.
		_, derr := p.del(a)
		return sample{}, errors.Join(err, derr)
	}
	delTime, err := p.del(a)
	if err != nil {
		return sample{}, err
	}
	return sample{add: addTime, del: delTime}, nil
}

// delAll DELs every attachment still present, continuing past failures.
func (p *plugin) delAll() error {
	var errs []error
	for i := len(p.attached) - 1; i >= 0; i-- {
		if _, err := p.del(p.attached[i]); err != nil {
			errs = append(errs, err)
		}
	}
	p.attached = nil
	return errors.Join(errs...)
}

// benchRunDir holds the bind mounts that keep the container namespaces alive without names
// in /run/netns, which would be thousands of `ip netns` entries.
const benchRunDir = "/run/nsnet-bench"

// netnsDir creates network namespaces pinned by bind mounts in one directory of its own.
type netnsDir struct {
	dir   string
	paths []string
}

func newNetnsDir() (*netnsDir, error) {
	if err := os.MkdirAll(benchRunDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", benchRunDir, err)
	}
	dir, err := os.MkdirTemp(benchRunDir, "run-")
	if err != nil {
		return nil, fmt.Errorf("creating netns dir: %w", err)
	}
	return &netnsDir{dir: dir}, nil
}

// create makes a new, empty network namespace and pins it at dir/name.
func (d *netnsDir) create(name string) (string, error) {
	path := filepath.Join(d.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("creating netns mount point: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends with this goroutine, so its netns never leaks
		// into the rest of the program.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mounting %s on %s: %w", src, path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", fmt.Errorf("creating netns %s: %w", name, err)
	}
	d.paths = append(d.paths, path)
	return path, nil
}

// remove unmounts every namespace (freeing it) and deletes the directory. Calling it again
// retries only what failed.
func (d *netnsDir) remove() error {
	var errs []error
	var left []string
	for _, p := range d.paths {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
			left = append(left, p)
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			left = append(left, p)
		}
	}
	d.paths = left
	if err := os.Remove(d.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	// The parent is shared with other runs; leave it if one is still using it.
	if err := os.Remove(benchRunDir); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
