package vm

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// The guest's /init and the systemd unit that runs the tests in systemd
// mode.
var (
	//go:embed scripts/init.sh
	initScript []byte
	//go:embed scripts/vmtest.service
	unitFile []byte
)

// Guest paths the host and the guest agree on.
const (
	GuestDir      = "/vmtest"
	GuestPlan     = GuestDir + "/plan.json"
	GuestRunner   = GuestDir + "/runner"
	guestModules  = GuestDir + "/modules"
	guestUnit     = GuestDir + "/systemd/vmtest.service"
	ResultsPort   = "/dev/ttyS1"
	RootSerial    = "nsnet-root"
	ScratchSerial = "nsnet-scratch"
)

// The guest's host name and hosts file, the same in both modes: the
// initramfs carries them and configureRoot writes them into the systemd
// image.
const (
	guestHostname = "nsnet-vm\n"
	guestHosts    = "127.0.0.1 localhost nsnet-vm\n::1 localhost\n"
)

// Initramfs is the image the VM boots from.
type Initramfs struct {
	Kernel Kernel
	// Modules are loaded, with their dependencies, before anything else.
	Modules []string
	Busybox string // host path of a static busybox
	Runner  string // host path of the static runner program
	Plan    Plan
	// Files maps guest paths to the host files copied there.
	Files map[string]string
}

// Write writes the image as an uncompressed newc cpio archive: the kernel
// unpacks that faster than a compressed one under TCG, and memory is not
// short.
func (i Initramfs) Write(file string) error {
	modules, err := i.moduleFiles()
	if err != nil {
		return err
	}
	plan, err := json.MarshalIndent(i.Plan, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding plan: %w", err)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("creating initramfs: %w", err)
	}
	a := NewArchive(f)
	// The kernel opens /dev/console for init before anything is mounted.
	a.CharDev("/dev/console", 0o600, 5, 1)
	a.Dir("/tmp", 0o777|os.ModeSticky)
	a.File("/init", 0o755, initScript)
	a.CopyFile("/bin/busybox", i.Busybox)
	a.File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	a.File("/etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	a.File("/etc/hostname", 0o644, []byte(guestHostname))
	a.File("/etc/hosts", 0o644, []byte(guestHosts))
	// Runtimes bind the host's resolv.conf into containers; the VM has no
	// network, so it is empty, but it exists as on any host.
	a.File("/etc/resolv.conf", 0o644, nil)
	a.Dir("/root", 0o700)
	a.CopyFile(GuestRunner, i.Runner)
	a.File(GuestPlan, 0o644, plan)
	a.File(guestUnit, 0o644, unitFile)
	var list strings.Builder
	for _, m := range modules {
		guest := path.Join("/lib/modules", i.Kernel.Version, m)
		a.CopyFile(guest, filepath.Join(i.Kernel.ModulesDir, m))
		list.WriteString(guest + "\n")
	}
	a.File(guestModules, 0o644, []byte(list.String()))
	for _, g := range slices.Sorted(maps.Keys(i.Files)) {
		a.CopyFile(g, i.Files[g])
	}
	err = a.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing initramfs %s: %w", file, err)
	}
	return nil
}

// moduleFiles resolves the modules to load into files in load order.
func (i Initramfs) moduleFiles() ([]string, error) {
	dep, err := os.Open(filepath.Join(i.Kernel.ModulesDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("reading the kernel's modules.dep: %w", err)
	}
	defer dep.Close()
	deps, err := ParseModulesDep(dep)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.Open(filepath.Join(i.Kernel.ModulesDir, "modules.builtin")); err == nil {
		builtin, err = ParseModulesBuiltin(b)
		b.Close()
		if err != nil {
			return nil, err
		}
	}
	return deps.LoadOrder(i.Modules, builtin)
}

// AddTree adds every regular file below hostDir to files, under guestDir.
func AddTree(files map[string]string, guestDir, hostDir string) error {
	return filepath.WalkDir(hostDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walking %s: %w", hostDir, err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(hostDir, p)
		if err != nil {
			return err
		}
		files[path.Join(guestDir, filepath.ToSlash(rel))] = p
		return nil
	})
}
