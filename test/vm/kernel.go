package vm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Kernel is an installed Debian kernel: its compressed image and modules.
type Kernel struct {
	Version    string // e.g. 6.1.0-57-amd64
	Vmlinuz    string // /boot/vmlinuz-VERSION
	ModulesDir string // /lib/modules/VERSION
}

// FindKernel picks the newest kernel in bootDir (vmlinuz-VERSION) whose
// modules are installed under modulesRoot/VERSION.
func FindKernel(bootDir, modulesRoot string) (Kernel, error) {
	images, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return Kernel{}, fmt.Errorf("listing kernels in %s: %w", bootDir, err)
	}
	var found []Kernel
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		mods := filepath.Join(modulesRoot, v)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err == nil {
			found = append(found, Kernel{Version: v, Vmlinuz: img, ModulesDir: mods})
		}
	}
	if len(found) == 0 {
		return Kernel{}, fmt.Errorf("no kernel in %s with modules in %s (install linux-image-amd64)", bootDir, modulesRoot)
	}
	slices.SortFunc(found, func(a, b Kernel) int { return compareVersions(a.Version, b.Version) })
	return found[len(found)-1], nil
}

// compareVersions orders kernel versions by their numeric fields
// (6.1.0-57 < 6.1.0-100), falling back to the text for the rest.
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	fa, fb := split(a), split(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		var na, nb int
		_, ea := fmt.Sscanf(fa[i], "%d", &na)
		_, eb := fmt.Sscanf(fb[i], "%d", &nb)
		switch {
		case ea == nil && eb == nil && na != nb:
			return na - nb
		case (ea != nil || eb != nil) && fa[i] != fb[i]:
			return strings.Compare(fa[i], fb[i])
		}
	}
	return len(fa) - len(fb)
}

// xzMagic starts an xz stream; Debian compresses its bzImage payload with xz.
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0}

// Vmlinux returns the uncompressed ELF kernel of k, cached in cacheDir and
// extracted again only when the vmlinuz is newer than the cache. qemu boots
// it through its PVH entry, which skips the firmware and the decompressor:
// about 4 s of every boot under TCG.
func (k Kernel) Vmlinux(cacheDir string) (string, error) {
	out := filepath.Join(cacheDir, "vmlinux-"+k.Version)
	src, err := os.Stat(k.Vmlinuz)
	if err != nil {
		return "", fmt.Errorf("reading kernel image: %w", err)
	}
	if st, err := os.Stat(out); err == nil && !st.ModTime().Before(src.ModTime()) {
		return out, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	img, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return "", fmt.Errorf("reading kernel image: %w", err)
	}
	off := bytes.Index(img, xzMagic)
	if off < 0 {
		return "", fmt.Errorf("%s has no xz-compressed payload; only xz kernels are supported", k.Vmlinuz)
	}
	tmp, err := os.CreateTemp(cacheDir, ".vmlinux-*")
	if err != nil {
		return "", fmt.Errorf("creating temp file for vmlinux: %w", err)
	}
	defer os.Remove(tmp.Name())
	// --single-stream stops at the end of the kernel and ignores the
	// bzImage's trailing bytes instead of failing on them.
	cmd := exec.Command("xz", "--decompress", "--stdout", "--single-stream")
	cmd.Stdin = bytes.NewReader(img[off:])
	cmd.Stdout = tmp
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("decompressing %s with xz: %w: %s", k.Vmlinuz, err, strings.TrimSpace(stderr.String()))
	}
	if err := checkPVH(tmp.Name()); err != nil {
		return "", fmt.Errorf("extracted %s: %w", k.Vmlinuz, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("caching vmlinux: %w", err)
	}
	return out, nil
}

// checkPVH makes sure the file is an x86-64 ELF kernel with the Xen ELF
// note (type 18, XEN_ELFNOTE_PHYS32_ENTRY) that qemu needs to boot it
// directly (CONFIG_PVH).
func checkPVH(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("not an ELF kernel: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("ELF machine %v, want x86-64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return fmt.Errorf("reading ELF notes: %w", err)
		}
		if hasXenPVHNote(data, f.ByteOrder) {
			return nil
		}
	}
	return errors.New("no PVH entry note: the kernel was built without CONFIG_PVH")
}

// hasXenPVHNote walks ELF note records (namesz, descsz, type, name, desc,
// each padded to 4 bytes) looking for the "Xen" note of type 18.
func hasXenPVHNote(data []byte, order binary.ByteOrder) bool {
	const xenElfnotePhys32Entry = 18
	align := func(n uint32) int { return int((n + 3) &^ 3) }
	for len(data) >= 12 {
		namesz, descsz, typ := order.Uint32(data), order.Uint32(data[4:]), order.Uint32(data[8:])
		rest := data[12:]
		if align(namesz)+align(descsz) > len(rest) {
			return false
		}
		name := string(bytes.TrimRight(rest[:namesz], "\x00"))
		if name == "Xen" && typ == xenElfnotePhys32Entry {
			return true
		}
		data = rest[align(namesz)+align(descsz):]
	}
	return false
}
