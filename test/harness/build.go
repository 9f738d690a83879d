package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Versions of the upstream code the tests compare against and drive plugins with.
const (
	ReferencePluginsModule  = "github.com/containernetworking/plugins"
	ReferencePluginsVersion = "v1.10.0"
	CnitoolPackage          = "github.com/containernetworking/cni/cnitool"
	CnitoolVersion          = "v1.3.1"
)

// referencePluginPackages are the upstream plugins installed for comparison and chaining.
var referencePluginPackages = []string{
	"main/bridge", "main/loopback", "ipam/host-local", "ipam/static",
	"meta/portmap", "meta/tuning", "meta/firewall",
}

// Binaries locates every plugin a test can invoke.
type Binaries struct {
	// ProjectDir holds the plugins built from ./plugins/... of this module.
	ProjectDir string
	// ReferenceDir holds the upstream plugins (bridge, host-local, portmap, ...).
	ReferenceDir string
	// Cnitool is the path of upstream cnitool.
	Cnitool string
	// CNIPath is ProjectDir:ReferenceDir; the names never clash (bridge-lite vs bridge).
	CNIPath string
	// Nsnet is the nsnet command built from ./cmd/nsnet into ProjectDir, "" when there is none.
	Nsnet string
}

// Require returns the path of plugin name from ProjectDir or ReferenceDir and fails the test,
// naming what is missing, when it was not built.
func (b *Binaries) Require(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range []string{b.ProjectDir, b.ReferenceDir} {
		if p := filepath.Join(dir, name); isRegular(p) {
			return p
		}
	}
	t.Fatalf("plugin %q is not built: no main package ./plugins/%s in this module and not a reference plugin (looked in %s)",
		name, name, b.CNIPath)
	return ""
}

// shared caches one project build per test binary, when the test binary's TestMain uses Main.
var shared struct {
	sync.Mutex
	enabled bool
	dir     string
	done    bool
	err     error
}

// Main runs the tests of a package, giving all of them one build of the project's plugins, and
// removes that build at the end. Use it as: func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }.
func Main(m *testing.M) int {
	shared.Lock()
	shared.enabled = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.dir != "" {
		if err := os.RemoveAll(shared.dir); err != nil {
			fmt.Fprintf(os.Stderr, "harness: removing plugin build dir: %v\n", err)
		}
	}
	return code
}

// Build builds this module's plugins (once per test binary when TestMain uses Main, otherwise
// once per test into its temp dir) and installs the reference plugins and cnitool into the
// per-user cache, so reruns don't download or compile them again.
func Build(t testing.TB) *Binaries {
	t.Helper()
	projectDir, err := projectPlugins(t)
	if err != nil {
		t.Fatalf("building project plugins: %v", err)
	}
	refDir := ReferencePlugins(t)
	b := &Binaries{
		ProjectDir:   projectDir,
		ReferenceDir: refDir,
		Cnitool:      Cnitool(t),
		CNIPath:      projectDir + string(os.PathListSeparator) + refDir,
	}
	if p := filepath.Join(projectDir, "nsnet"); isRegular(p) {
		b.Nsnet = p
	}
	return b
}

// RequireNsnet returns the path of the nsnet command and fails the test when it was not built.
func (b *Binaries) RequireNsnet(t testing.TB) string {
	t.Helper()
	if b.Nsnet == "" {
		t.Fatalf("nsnet is not built: no main package ./cmd/nsnet in this module (looked in %s)", b.ProjectDir)
	}
	return b.Nsnet
}

func isRegular(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ReferencePlugins returns the directory holding the upstream plugins, installing them if needed.
func ReferencePlugins(t testing.TB) string {
	t.Helper()
	dir, err := ReferencePluginsDir()
	if err != nil {
		t.Fatalf("installing reference plugins: %v", err)
	}
	return dir
}

// Cnitool returns the path of upstream cnitool, installing it if needed.
func Cnitool(t testing.TB) string {
	t.Helper()
	p, err := CnitoolPath()
	if err != nil {
		t.Fatalf("installing cnitool: %v", err)
	}
	return p
}

// BinDirEnv names a directory of prebuilt project binaries (plugins and nsnet) that Build uses
// instead of running go build: the test VM of test/vm has no Go toolchain.
const BinDirEnv = "NSNET_TEST_BIN_DIR"

func projectPlugins(t testing.TB) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir, nil
	}
	shared.Lock()
	defer shared.Unlock()
	if !shared.enabled {
		dir := t.TempDir()
		return dir, BuildProjectPlugins(dir)
	}
	if !shared.done {
		shared.done = true
		shared.dir, shared.err = os.MkdirTemp("", "nsnet-plugins-")
		if shared.err == nil {
			shared.err = BuildProjectPlugins(shared.dir)
		}
	}
	return shared.dir, shared.err
}

// BuildProjectPlugins builds every main package under ./plugins/ and ./cmd/ of this module (the
// plugins and the nsnet command) into dir. A directory without a main package yet is not an
// error; Binaries.Require and RequireNsnet report it.
func BuildProjectPlugins(dir string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	list := GoCommand(root, "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "./plugins/...", "./cmd/...")
	out, err := run(list)
	if err != nil {
		return err
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) == 0 {
		return nil
	}
	build := GoCommand(root, append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	// Static binaries, as `make build` makes them: nsnet executes itself as
	// the init inside containers whose root has no C library.
	build.Env = append(build.Env, "CGO_ENABLED=0")
	_, err = run(build)
	return err
}

// ModuleRoot is the directory of this module's go.mod, found the way the go command finds it.
func ModuleRoot() (string, error) {
	out, err := run(GoCommand("", "env", "GOMOD"))
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// ReferencePluginsDir installs the upstream plugins into the per-user cache unless a complete
// install is already there, and returns that directory.
func ReferencePluginsDir() (string, error) {
	pkgs := make([]string, len(referencePluginPackages))
	for i, p := range referencePluginPackages {
		pkgs[i] = ReferencePluginsModule + "/plugins/" + p + "@" + ReferencePluginsVersion
	}
	return GoInstall("plugins-"+ReferencePluginsVersion, pkgs)
}

// CnitoolPath installs cnitool into the per-user cache unless it is already there.
func CnitoolPath() (string, error) {
	dir, err := GoInstall("cnitool-"+CnitoolVersion, []string{CnitoolPackage + "@" + CnitoolVersion})
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "cnitool"), nil
}

// CacheRoot is where installed upstream binaries are kept between runs.
func CacheRoot() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "nsnet-test")
}

// GoInstall runs `go install pkgs` (with env added to the environment) into CacheRoot()/name
// once and returns that directory; a marker file written last tells a complete install from
// one interrupted midway, and a lock file serialises test binaries that run at the same time.
func GoInstall(name string, pkgs []string, env ...string) (string, error) {
	root := CacheRoot()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	dir := filepath.Join(root, name)
	marker := filepath.Join(dir, ".complete")
	if _, err := os.Stat(marker); err == nil {
		return dir, nil
	}
	unlock, err := LockFile(dir + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(marker); err == nil {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("removing incomplete install %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	// Run outside this module so its go.mod and any go.work cannot change what is installed.
	cmd := GoCommand(os.TempDir(), append([]string{"install"}, pkgs...)...)
	cmd.Env = append(append(cmd.Env, "GOBIN="+dir, "GOWORK=off"), env...)
	if _, err := run(cmd); err != nil {
		return "", err
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "", fmt.Errorf("marking %s complete: %w", dir, err)
	}
	return dir, nil
}

// LockFile takes an exclusive flock on path (creating it) and returns the
// function that releases it; cache builders use it to serialise test
// binaries and tools that run at the same time.
func LockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// GoCommand runs the go tool that is on PATH, or the standard install when PATH lacks it (CI
// scripts and sudo often reset PATH).
func GoCommand(dir string, args ...string) *exec.Cmd {
	goBin := "go"
	if _, err := exec.LookPath(goBin); err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.Command(goBin, args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	return cmd
}

func run(cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return out, nil
}
