// Command vmtest runs nsnet's cgroup and isolation tests inside a qemu VM
// with a pure cgroup v2 hierarchy (package test/vm), so they run on a real
// v2 kernel whatever the host has; with -systemd the VM boots a cached
// Debian image with systemd as PID 1, for the systemd cgroup driver.
//
// It installs what is missing (qemu, a Debian kernel, busybox-static and,
// for -systemd, debootstrap), builds static test binaries with
// `go test -c`, nsnet and the plugins, packs them into an initramfs, boots
// it without network under timeout(1), and prints the guest's test output
// as `go test -v` would. It exits non-zero when a package fails, does not
// run, or the VM times out or crashes.
//
// Run as root from the module: `make vmtest`, or
//
//	go run ./test/cmd/vmtest [-systemd] [-run REGEX] [-pkg 'PKG [TESTFLAG...]']...
//
// The host is not changed beyond the Debian packages and the cache in
// ~/.cache/nsnet-test/vm (kernel, systemd image); everything else lives in
// a temporary directory removed at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nsnet/nsnet/test/harness"
	"github.com/nsnet/nsnet/test/vm"
)

func main() {
	os.Exit(run())
}

// Default packages and their test flags. The ./test package's other tests
// (and its TestRunNet ones) need iproute2's ip netns, nft and iptables,
// which the busybox guest does not have.
var (
	defaultPackages = []string{
		"./test/vm/guest",
		"./isolation/cgroups",
		"./isolation",
		"./test -test.run ^TestRun|Cgroup -test.skip ^TestRunNet",
	}
	defaultSystemdPackages = []string{
		"./test/vm/guest",
		"./isolation/cgroups -test.run Systemd",
		"./test -test.run Systemd",
	}
	// defaultModules are the kernel modules nsnet's tests can need beyond
	// the built-in ones: the virtio disk (io.max) and the pieces of a
	// container network (veth, bridge, nftables NAT), and tun for the device
	// controller tests (a character device to allow or deny). crc32c_generic comes
	// first: libcrc32c (nf_tables) and ext4 ask the crypto API for crc32c at
	// load time, a soft dependency modules.dep does not list.
	defaultModules = "crc32c_generic,virtio_pci,virtio_blk,ext4,veth,bridge,nf_tables,nft_chain_nat,nft_nat,nft_masq,nft_ct,nft_fib_inet,nft_fib_ipv4,nft_fib_ipv6,tun"
	// systemdDebs are installed into the systemd image besides debootstrap's
	// minimal base: systemd as init, udev for the disks, the D-Bus system bus.
	systemdDebs = "systemd-sysv,udev,dbus,busybox-static"
)

type packageFlag []string

func (p *packageFlag) String() string     { return strings.Join(*p, "; ") }
func (p *packageFlag) Set(s string) error { *p = append(*p, s); return nil }

type options struct {
	packages   []string
	run        string
	systemd    bool
	negative   bool
	timeout    time.Duration
	pkgTimeout time.Duration
	memory     int
	cpus       int
	diskMiB    int
	modules    []string
	cacheDir   string
	suite      string
	install    bool
	append     string
	console    bool
	keep       bool
}

func parseFlags() (*options, error) {
	var o options
	var pkgs packageFlag
	flag.Var(&pkgs, "pkg", "a package to test in the VM, optionally followed by test binary flags: 'PKG [-test.run REGEX ...]' (repeatable; replaces the default list)")
	flag.StringVar(&o.run, "run", "", "run only the tests matching REGEX in every package (overrides the packages' own -test.run)")
	flag.BoolVar(&o.systemd, "systemd", false, "boot the cached Debian image with systemd as PID 1 (built with debootstrap when missing)")
	flag.BoolVar(&o.negative, "negative", false, "negative control: set NSNET_VM_NO_LIMITS=1 in the guest, so tests that honour it skip setting limits and must fail")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "the whole VM run, from qemu start to power-off")
	flag.DurationVar(&o.pkgTimeout, "pkg-timeout", 8*time.Minute, "-test.timeout of every test binary (the runner kills it 30s later)")
	flag.IntVar(&o.memory, "mem", 1024, "guest memory in MiB")
	flag.IntVar(&o.cpus, "smp", 2, "guest CPUs")
	flag.IntVar(&o.diskMiB, "disk", 64, "size in MiB of the scratch virtio disk (NSNET_VM_DISK in the guest)")
	modules := flag.String("modules", defaultModules, "comma-separated kernel modules loaded (with their dependencies) at boot")
	flag.StringVar(&o.cacheDir, "cache", filepath.Join(harness.CacheRoot(), "vm"), "cache of the uncompressed kernel and the systemd image")
	flag.StringVar(&o.suite, "suite", "bookworm", "Debian suite of the systemd image")
	flag.StringVar(&o.append, "append", "", "extra kernel command line arguments")
	flag.BoolVar(&o.install, "install", true, "install missing Debian packages with apt-get")
	flag.BoolVar(&o.console, "console", false, "print the whole guest console (kernel, init, systemd) at the end")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (initramfs, binaries, console log) and print its path")
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	o.packages = pkgs
	if len(o.packages) == 0 {
		o.packages = defaultPackages
		if o.systemd {
			o.packages = defaultSystemdPackages
		}
	}
	for _, m := range strings.Split(*modules, ",") {
		if m = strings.TrimSpace(m); m != "" {
			o.modules = append(o.modules, m)
		}
	}
	if o.memory < 256 || o.cpus < 1 || o.diskMiB < 1 || o.timeout <= 0 || o.pkgTimeout <= 0 {
		return nil, errors.New("-mem must be >= 256, -smp and -disk >= 1, and the timeouts positive")
	}
	return &o, nil
}

// testPackage is one test binary to build and run.
type testPackage struct {
	path string   // as given: ./isolation/cgroups
	name string   // file name: isolation_cgroups
	args []string // test binary flags
}

func parsePackages(specs []string, run string, pkgTimeout time.Duration) ([]testPackage, error) {
	var out []testPackage
	seen := map[string]bool{}
	for _, spec := range specs {
		f := strings.Fields(spec)
		if len(f) == 0 {
			return nil, errors.New("empty -pkg")
		}
		p := testPackage{path: f[0], name: strings.ReplaceAll(strings.Trim(filepath.Clean(f[0]), "./"), "/", "_")}
		if !strings.HasPrefix(p.path, "./") || p.name == "" {
			return nil, fmt.Errorf("-pkg %q: want a package directory relative to the module root, like ./isolation/cgroups", spec)
		}
		if seen[p.name] {
			return nil, fmt.Errorf("-pkg %q: package listed twice", spec)
		}
		seen[p.name] = true
		p.args = []string{"-test.v", "-test.count=1", "-test.timeout=" + pkgTimeout.String()}
		for i := 1; i < len(f); i++ {
			if run != "" && (f[i] == "-test.run" || f[i] == "-run") && i+1 < len(f) {
				i++
				continue
			}
			if run != "" && (strings.HasPrefix(f[i], "-test.run=") || strings.HasPrefix(f[i], "-run=")) {
				continue
			}
			p.args = append(p.args, f[i])
		}
		if run != "" {
			p.args = append(p.args, "-test.run", run)
		}
		out = append(out, p)
	}
	return out, nil
}

func run() int {
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 2
	}
	pkgs, err := parsePackages(opts.packages, opts.run, opts.pkgTimeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "nsnet-vmtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		return 1
	}
	if opts.keep {
		fmt.Fprintln(os.Stderr, "vmtest: keeping", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if err := vmtest(ctx, opts, pkgs, tmp); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest:", err)
		fmt.Println("FAIL\tvmtest")
		return 1
	}
	return 0
}

func vmtest(ctx context.Context, o *options, pkgs []testPackage, tmp string) error {
	start := time.Now()
	if o.install {
		debs := []string{"qemu-system-x86", "linux-image-amd64", "busybox-static", "xz-utils"}
		if o.systemd {
			debs = append(debs, "debootstrap", "e2fsprogs")
		}
		if err := vm.EnsureDebs(os.Stderr, debs...); err != nil {
			return err
		}
	}
	kernel, err := vm.FindKernel("/boot", "/lib/modules")
	if err != nil {
		return err
	}
	vmlinux, err := kernel.Vmlinux(o.cacheDir)
	if err != nil {
		return err
	}
	var rootImage string
	if o.systemd {
		if rootImage, err = systemdImage(o); err != nil {
			return err
		}
	}
	prepared := time.Now()

	img, err := build(o, pkgs, kernel, tmp)
	if err != nil {
		return err
	}
	built := time.Now()
	initrd := filepath.Join(tmp, "initramfs.cpio")
	if err := img.Write(initrd); err != nil {
		return err
	}
	st, err := os.Stat(initrd)
	if err != nil {
		return err
	}
	packed := time.Now()
	fmt.Fprintf(os.Stderr, "vmtest: kernel %s, %s mode; setup %.1fs, build %.1fs, initramfs %.1fs (%d MiB)\n",
		kernel.Version, mode(o), prepared.Sub(start).Seconds(), built.Sub(prepared).Seconds(),
		packed.Sub(built).Seconds(), st.Size()>>20)

	scratch := filepath.Join(tmp, "scratch.img")
	if err := os.WriteFile(scratch, nil, 0o600); err != nil {
		return fmt.Errorf("creating the scratch disk: %w", err)
	}
	if err := os.Truncate(scratch, int64(o.diskMiB)<<20); err != nil {
		return fmt.Errorf("creating the scratch disk: %w", err)
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	m := vm.Machine{
		Kernel:     vmlinux,
		Initrd:     initrd,
		Cmdline:    "console=ttyS0 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 panic=-1 quiet loglevel=4",
		MemoryMiB:  o.memory,
		CPUs:       o.cpus,
		Accel:      vm.Accel(cpuinfo),
		ConsoleLog: filepath.Join(tmp, "console.log"),
		Timeout:    o.timeout,
		TempDir:    tmp,
	}
	if o.append != "" {
		m.Cmdline += " " + o.append
	}
	if o.systemd {
		m.Cmdline += " vmtest.mode=systemd"
		m.Disks = append(m.Disks, vm.Disk{Path: rootImage, Serial: vm.RootSerial, Snapshot: true})
	}
	m.Disks = append(m.Disks, vm.Disk{Path: scratch, Serial: vm.ScratchSerial})

	boot := time.Now()
	var rep vm.Report
	var firstResult time.Duration
	runErr := m.Run(ctx, func(r io.Reader) error {
		var err error
		rep, err = vm.Stream(&firstRead{r: r, at: func() { firstResult = time.Since(boot) }}, os.Stdout)
		return err
	})
	total := time.Since(boot)
	if o.console {
		if data, err := os.ReadFile(m.ConsoleLog); err == nil {
			fmt.Fprintf(os.Stderr, "vmtest: guest console:\n%s\n", data)
		}
	}
	var ran []string
	for _, p := range rep.Packages {
		ran = append(ran, fmt.Sprintf("%s %.1fs", p.Name, p.Elapsed.Seconds()))
	}
	fmt.Fprintf(os.Stderr, "vmtest: accel %s; qemu start to first result %.1fs, to power-off %.1fs; packages: %s\n",
		m.Accel, firstResult.Seconds(), total.Seconds(), strings.Join(ran, ", "))
	failures := rep.Failures(img.Plan)
	if runErr != nil {
		failures = append(failures, runErr.Error())
	}
	if len(failures) > 0 {
		if console := vm.TailFile(m.ConsoleLog, 40); !o.console && strings.TrimSpace(console) != "" {
			fmt.Fprintf(os.Stderr, "vmtest: last lines of the guest console:\n%s\n", console)
		}
		return fmt.Errorf("%d problem(s):\n  %s", len(failures), strings.Join(failures, "\n  "))
	}
	fmt.Printf("ok  \tvmtest\t%.3fs\n", time.Since(start).Seconds())
	return nil
}

// mode is the guest's init: NSNET_VM_MODE in the guest.
func mode(o *options) string {
	if o.systemd {
		return "systemd"
	}
	return "busybox"
}

// firstRead calls at once, when the first results arrive.
type firstRead struct {
	r    io.Reader
	at   func()
	seen bool
}

func (f *firstRead) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if n > 0 && !f.seen {
		f.seen = true
		f.at()
	}
	return n, err
}

// systemdImage returns the cached systemd image, building it from the
// mirror apt uses when it is missing.
func systemdImage(o *options) (string, error) {
	s := vm.SystemdImage{Suite: o.suite, Packages: strings.Split(systemdDebs, ","), SizeMiB: 1024}
	if _, err := os.Stat(filepath.Join(o.cacheDir, s.Name())); err == nil {
		return filepath.Join(o.cacheDir, s.Name()), nil
	}
	mirror, err := vm.AptMirror(o.suite)
	if err != nil {
		// apt lists the sources it has downloaded indexes for; refresh once.
		if out, uerr := exec.Command("apt-get", "update", "-q").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("%w; apt-get update: %v: %s", err, uerr, out)
		}
		if mirror, err = vm.AptMirror(o.suite); err != nil {
			return "", err
		}
	}
	s.Mirror = mirror
	return s.Ensure(o.cacheDir, os.Stderr)
}

// build compiles the test binaries, the runner, nsnet and the plugins into
// tmp and returns the initramfs that carries them, with the plan that runs
// them.
func build(o *options, pkgs []testPackage, kernel vm.Kernel, tmp string) (vm.Initramfs, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return vm.Initramfs{}, err
	}
	bin := filepath.Join(tmp, "bin")
	img := vm.Initramfs{
		Kernel:  kernel,
		Modules: o.modules,
		Busybox: "/bin/busybox",
		Runner:  filepath.Join(tmp, "runner"),
		Files:   map[string]string{},
		Plan: vm.Plan{
			Output:        vm.ResultsPort,
			ScratchSerial: vm.ScratchSerial,
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:" + vm.GuestDir + "/tools",
				"HOME=/root", "TMPDIR=/tmp", "LANG=C.UTF-8",
				"NSNET_IN_VM=1", "NSNET_VM_MODE=" + mode(o),
				// test/harness uses these prebuilt binaries instead of running go build.
				harness.BinDirEnv + "=" + vm.GuestDir + "/bin",
				// ... and finds the reference plugins and cnitool in this cache.
				"XDG_CACHE_HOME=" + vm.GuestDir + "/cache",
			},
		},
	}
	if o.negative {
		img.Plan.Env = append(img.Plan.Env, "NSNET_VM_NO_LIMITS=1")
	}
	if err := goBuild(root, "build", "-trimpath", "-o", img.Runner, "./test/vm/runner"); err != nil {
		return img, err
	}
	if err := harness.BuildProjectPlugins(bin); err != nil {
		return img, fmt.Errorf("building nsnet and the plugins: %w", err)
	}
	if err := vm.AddTree(img.Files, vm.GuestDir+"/bin", bin); err != nil {
		return img, err
	}
	needReference := false
	for _, p := range pkgs {
		out := filepath.Join(tmp, "tests", p.name+".test")
		if err := goBuild(root, "test", "-c", "-ldflags=-s -w", "-o", out, p.path); err != nil {
			return img, err
		}
		if _, err := os.Stat(out); err != nil {
			return img, fmt.Errorf("%s has no tests to run (go test -c wrote no binary)", p.path)
		}
		guestBin := vm.GuestDir + "/tests/" + p.name + ".test"
		dir := vm.GuestDir + "/pkg/" + p.name
		img.Files[guestBin] = out
		if td := filepath.Join(root, p.path, "testdata"); isDir(td) {
			if err := vm.AddTree(img.Files, dir+"/testdata", td); err != nil {
				return img, err
			}
		}
		img.Plan.Packages = append(img.Plan.Packages, vm.PlanPackage{
			Name: p.path, Binary: guestBin, Dir: dir, Args: p.args, Timeout: o.pkgTimeout + 30*time.Second,
		})
		needReference = needReference || p.path == "./test"
	}
	if needReference {
		for _, install := range []func() (string, error){harness.ReferencePluginsDir, harness.CnitoolPath} {
			p, err := install()
			if err != nil {
				return img, fmt.Errorf("installing reference binaries: %w", err)
			}
			if !isDir(p) {
				p = filepath.Dir(p)
			}
			if err := vm.AddTree(img.Files, vm.GuestDir+"/cache/nsnet-test/"+filepath.Base(p), p); err != nil {
				return img, err
			}
		}
	}
	return img, nil
}

// goBuild runs the go command in the module root with cgo off: the guest
// has no C library.
func goBuild(root string, args ...string) error {
	cmd := harness.GoCommand(root, args...)
	cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
