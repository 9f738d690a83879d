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

// plugin is one network under test in its own sandbox host, with the attachments made so far.
type plugin struct {
	label   string
	binary  string
	host    *harness.Host
	cniPath string
	conf    []byte
	netns   *netnsDir
	prefix  string

	attached []attachment
	measure  string // container netns reused by every measured ADD+DEL
}

type attachment struct {
	id, netns string
	result    []byte
}

func (p *plugin) call(command, id, netnsPath string, conf []byte) (*harness.PluginOutput, error) {
	out, err := harness.ExecPlugin(p.host.NetNS, p.binary, harness.Invocation{
		Command: command, ContainerID: id, NetNS: netnsPath, IfName: "eth0", Path: p.cniPath, Config: conf,
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s %s: %w", p.label, command, id, err)
	}
	if out.Failed() {
		return out, fmt.Errorf("%s %s %s failed: %s", p.label, command, id, out)
	}
	return out, nil
}

func (p *plugin) add(id, netnsPath string) (attachment, time.Duration, error) {
	out, err := p.call("ADD", id, netnsPath, p.conf)
	if err != nil {
		return attachment{}, 0, err
	}
	return attachment{id: id, netns: netnsPath, result: out.Stdout}, out.Duration, nil
}

// del sends DEL with the ADD result as prevResult, as a runtime does.
func (p *plugin) del(a attachment) (time.Duration, error) {
	conf := p.conf
	if a.result != nil {
		var m map[string]any
		if err := json.Unmarshal(p.conf, &m); err != nil {
			return 0, fmt.Errorf("decoding %s config: %w", p.label, err)
		}
		m["prevResult"] = json.RawMessage(a.result)
		var err error
		if conf, err = json.Marshal(m); err != nil {
			return 0, fmt.Errorf("encoding %s DEL config: %w", p.label, err)
		}
	}
	out, err := p.call("DEL", a.id, a.netns, conf)
	if err != nil {
		return 0, err
	}
	return out.Duration, nil
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
		a, _, err := p.add(p.prefix+"-"+strconv.Itoa(i), nsPath)
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
	a, addTime, err := p.add(p.prefix+"-"+id, p.measure)
	if err != nil {
		// A failed ADD is still followed by a DEL, as the spec asks of runtimes.
		_, derr := p.del(attachment{id: p.prefix + "-" + id, netns: p.measure})
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

// remove unmounts every namespace (freeing it) and deletes the directory.
func (d *netnsDir) remove() error {
	var errs []error
	for _, p := range d.paths {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(d.dir); err != nil {
		errs = append(errs, err)
	}
	// The parent is shared with other runs; leave it if one is still using it.
	if err := os.Remove(benchRunDir); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
