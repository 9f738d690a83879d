// Command runbench measures how long `nsnet run --rootfs R -- /bin/true` takes (full
// hardening, --net none, nsnet's init as PID 1, --rm) next to `runc run`, `crun run` and
// `bwrap` starting /bin/true in the same busybox-static root. Every tool runs once per
// iteration, round-robin with the first tool rotating, so all see the same machine noise;
// each sample is one whole command from fork/exec to exit. It prints the median and p95 per
// tool and the ratios nsnet/runc, nsnet/crun and nsnet/bwrap against the targets of issue 4.
//
// The measurements run in a private mount namespace (the program re-executes itself there),
// so nothing any tool mounts can outlive the run; the rootfs and every tool's state are on a
// tmpfs there, as the tools keep their state on one by default. runc puts its containers in a
// cgroup below this process's own one in every hierarchy and removes it on delete; crun runs
// with --cgroup-manager=disabled and bwrap creates no cgroup. Run as root: `make bench`, or
// `go run ./test/cmd/runbench -bin bin -n 30 [-json]`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nsnet/nsnet/internal/testrootfs"
	"github.com/nsnet/nsnet/pkg/undo"
	"github.com/nsnet/nsnet/test/harness"
)

func main() {
	os.Exit(run())
}

type options struct {
	n       int
	json    bool
	binDir  string
	verbose bool
	net     bool
	limits  bool
}

func parseFlags() (*options, error) {
	var o options
	flag.IntVar(&o.n, "n", 30, "timed runs per tool (at least 20 for the issue's figures)")
	flag.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	flag.StringVar(&o.binDir, "bin", "", "directory with the built nsnet (default: build ./cmd/... into a temp dir)")
	flag.BoolVar(&o.verbose, "v", false, "report progress on stderr")
	flag.BoolVar(&o.net, "net", false, "instead: nsnet run --net bridge-lite -p 8080:80 against runc run + cnitool add/del "+
		"of the reference bridge, host-local and portmap, in a sandbox host netns")
	flag.BoolVar(&o.limits, "limits", false, "instead: nsnet run and runc run with the same cgroup limits "+
		"(memory 64 MiB, 1 CPU, 100 pids)")
	flag.Parse()
	if o.net && o.limits {
		return nil, errors.New("-net and -limits are separate comparisons")
	}
	if o.n < 1 {
		return nil, errors.New("-n must be at least 1")
	}
	return &o, nil
}

func run() (code int) {
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "runbench: must run as root (every tool creates namespaces and mounts)")
		return 2
	}
	if !inPrivateMountNS() {
		return reexecInPrivateMountNS()
	}
	if err := hideUnifiedControllers(); err != nil {
		fmt.Fprintln(os.Stderr, "runbench:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Output piped into a reader that quits early (| head) must not kill
	// the program before its cleanups run: with SIGPIPE caught, writes to
	// the closed pipe fail instead. A handler, unlike SIG_IGN, is not
	// inherited by the tools measured.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	// Undone in reverse order, going on past failures so one does not
	// strand the rest.
	var cleanups undo.Stack
	defer func() {
		if err := cleanups.Rollback(); err != nil {
			fmt.Fprintln(os.Stderr, "runbench: cleanup:", err)
			code = 1
		}
	}()
	defer1 := cleanups.Push

	tools, skipped, within, err := setup(opts, defer1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbench:", err)
		return 1
	}
	for _, s := range skipped {
		fmt.Fprintf(os.Stderr, "runbench: skipping %s: %s\n", s.Tool, s.Reason)
	}
	var r *report
	err = within(func() (err error) {
		r, err = measure(ctx, opts, tools)
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbench:", err)
		return 1
	}
	r.Skipped = skipped
	r.Title = "run /bin/true in a busybox-static rootfs: nsnet run vs runc run, crun run, bwrap"
	if opts.limits {
		r.Title = "run /bin/true in a busybox-static rootfs with --memory 64m --cpus 1 --pids-limit 100: nsnet run vs runc run (same limits)"
	}
	if opts.net {
		r.Title = "run /bin/true with a published port: nsnet run --net bridge-lite -p 8080:80 vs " +
			"cnitool add (bridge+host-local+portmap) + runc run + cnitool del, in a sandbox host netns"
	}
	if opts.json {
		err = r.writeJSON(os.Stdout)
	} else {
		err = r.writeTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "runbench: writing report:", err)
		return 1
	}
	return 0
}

// setup builds the rootfs and the tools to compare; tools whose binary is missing or that
// cannot run safely here are returned as skipped, with the reason. within is how the tools
// must be run: in the sandbox host netns for -net.
func setup(opts *options, deferCleanup func(func() error)) (tools []*tool, skipped []skip, within func(func() error) error, err error) {
	tools, skipped, within, err = setupTools(opts, deferCleanup)
	if within == nil {
		within = func(f func() error) error { return f() }
	}
	return tools, skipped, within, err
}

func setupTools(opts *options, deferCleanup func(func() error)) ([]*tool, []skip, func(func() error) error, error) {
	tmp, err := os.MkdirTemp("", "runbench-")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating temp dir: %w", err)
	}
	deferCleanup(func() error { return os.RemoveAll(tmp) })
	if err := mountTmpfs(tmp); err != nil {
		return nil, nil, nil, err
	}
	deferCleanup(func() error { return syscall.Unmount(tmp, syscall.MNT_DETACH) })

	binDir := opts.binDir
	if binDir == "" {
		binDir = filepath.Join(tmp, "bin")
		if err := os.Mkdir(binDir, 0o755); err != nil {
			return nil, nil, nil, err
		}
		if err := harness.BuildProjectPlugins(binDir); err != nil {
			return nil, nil, nil, fmt.Errorf("building nsnet: %w", err)
		}
	}
	nsnetBin, err := filepath.Abs(filepath.Join(binDir, "nsnet"))
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := os.Stat(nsnetBin); err != nil {
		return nil, nil, nil, fmt.Errorf("nsnet binary missing (run make build): %w", err)
	}

	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, nil, nil, err
	}
	if err := testrootfs.Busybox(rootfs); err != nil {
		return nil, nil, nil, fmt.Errorf("building the busybox rootfs: %w", err)
	}

	if opts.net {
		return setupNet(tmp, nsnetBin, rootfs, deferCleanup)
	}
	var nsnetFlags []string
	var runcResources map[string]any
	others := []func(rootfs, dir string) (*tool, error){newCrunTool, newBwrapTool}
	if opts.limits {
		// crun runs without a cgroup manager here and bwrap has none.
		nsnetFlags, runcResources, others = limitFlags, limitResources, nil
	}
	nsnet, err := newNsnetTool(nsnetBin, rootfs, filepath.Join(tmp, "nsnet-state"), nsnetFlags...)
	if err != nil {
		return nil, nil, nil, err
	}
	deferCleanup(nsnet.cleanup)
	tools := []*tool{nsnet}
	var skipped []skip
	runc := func(rootfs, dir string) (*tool, error) { return newRuncTool(rootfs, dir, "", runcResources) }
	for _, mk := range append([]func(rootfs, dir string) (*tool, error){runc}, others...) {
		t, err := mk(rootfs, tmp)
		var s *skipError
		if errors.As(err, &s) {
			skipped = append(skipped, skip{Tool: s.tool, Reason: s.reason})
			continue
		}
		if err != nil {
			return nil, nil, nil, err
		}
		if t.cleanup != nil {
			deferCleanup(t.cleanup)
		}
		tools = append(tools, t)
	}
	if !opts.limits {
		bin, err := buildFloor(tmp)
		if err != nil {
			return nil, nil, nil, err
		}
		floors, err := newFloorTools(bin, rootfs)
		if err != nil {
			return nil, nil, nil, err
		}
		tools = append(tools, floors...)
	}
	return tools, skipped, nil, nil
}

// skipError says a tool cannot be measured on this machine.
type skipError struct{ tool, reason string }

func (e *skipError) Error() string { return e.tool + ": " + e.reason }

// skip is a tool left out of the report, with the reason.
type skip struct {
	Tool   string `json:"tool"`
	Reason string `json:"reason"`
}

// mountTmpfs puts a tmpfs on the temp dir in this private mount namespace.
// Every tool keeps its state there, and the rootfs, as they do by default
// on a tmpfs (/run/nsnet, /run/cni/nsnet, /run/runc, /run/crun): on a disk
// the timings would include its journal and the fsyncs some tools make.
// The mode is not 0700: the rootfs must be reachable the way a real one
// is.
func mountTmpfs(dir string) error {
	mnt, ok := mountPointOf(dir)
	if !ok || !isPrivateMount(mnt) {
		return fmt.Errorf("refusing to mount on %s: its mount %s is not private in this mount namespace", dir, mnt)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w", dir, err)
	}
	return nil
}
