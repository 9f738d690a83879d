package vm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// SystemdImage is a minimal Debian root with systemd as init, built with
// debootstrap and kept as an ext4 image in the cache. The VM boots it with
// snapshot=on, so the cached image never changes.
type SystemdImage struct {
	Suite    string   // Debian suite, e.g. bookworm
	Mirror   string   // the Debian mirror debootstrap downloads from
	Packages []string // extra packages (debootstrap --include)
	SizeMiB  int      // size of the ext4 file system
}

// imageLayout is bumped whenever Ensure configures the root differently,
// so older cached images are not used.
const imageLayout = 2

// Name is the cache file name; it changes with anything that changes the
// image's content (not with the mirror, which serves the same suite).
func (s SystemdImage) Name() string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%d\n%s\n%s\n%d", imageLayout, s.Suite, strings.Join(s.Packages, ","), s.SizeMiB)))
	return fmt.Sprintf("debian-%s-systemd-%s.ext4", s.Suite, hex.EncodeToString(h[:4]))
}

// Ensure returns the cached image in cacheDir, building it first when it
// is missing. A lock file serialises concurrent builds, and an image only
// gets its final name once complete, so an interrupted build is redone.
func (s SystemdImage) Ensure(cacheDir string, log io.Writer) (string, error) {
	final := filepath.Join(cacheDir, s.Name())
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	unlock, err := harness.LockFile(final + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	// Leftovers of an interrupted build of this image (the lock says none
	// is running).
	prefix := ".build-" + s.Name() + "-"
	stale, _ := filepath.Glob(filepath.Join(cacheDir, prefix+"*"))
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return "", fmt.Errorf("removing stale build %s: %w", p, err)
		}
	}
	work, err := os.MkdirTemp(cacheDir, prefix)
	if err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	start := time.Now()
	fmt.Fprintf(log, "vmtest: building the systemd image %s with debootstrap (%s from %s)\n", s.Name(), s.Suite, s.Mirror)
	// A private mount namespace: whatever debootstrap mounts in the target
	// (proc, sys) disappears with it, even if debootstrap fails midway.
	args := []string{"--mount", "--propagation", "private", "debootstrap", "--variant=minbase"}
	if len(s.Packages) > 0 {
		args = append(args, "--include="+strings.Join(s.Packages, ","))
	}
	args = append(args, s.Suite, root, s.Mirror)
	// One retry: a download from the mirror can fail on its own.
	for attempt := 1; ; attempt++ {
		cmd := exec.Command("unshare", args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err == nil {
			break
		}
		err = fmt.Errorf("debootstrap %s: %w\n%s", s.Suite, err, tail(out.String(), 30))
		if attempt == 2 {
			return "", err
		}
		fmt.Fprintf(log, "vmtest: %v\nvmtest: trying debootstrap once more\n", err)
		if err := os.RemoveAll(root); err != nil {
			return "", fmt.Errorf("removing the failed debootstrap: %w", err)
		}
	}
	fmt.Fprintf(log, "vmtest: debootstrap took %.1fs\n", time.Since(start).Seconds())
	if err := configureRoot(root); err != nil {
		return "", err
	}
	img := filepath.Join(work, "image.ext4")
	mkfs := exec.Command("mkfs.ext4", "-q", "-F", "-L", RootSerial, "-d", root, img, strconv.Itoa(s.SizeMiB)+"M")
	if out, err := mkfs.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4 -d %s: %w: %s", root, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(img, final); err != nil {
		return "", fmt.Errorf("caching the systemd image: %w", err)
	}
	// Images of other configurations are not used any more: each is
	// hundreds of MiB.
	old, _ := filepath.Glob(filepath.Join(cacheDir, "debian-*-systemd-*.ext4"))
	for _, p := range old {
		if p != final {
			_ = os.Remove(p)
			_ = os.Remove(p + ".lock")
		}
	}
	fmt.Fprintf(log, "vmtest: systemd image built in %.1fs\n", time.Since(start).Seconds())
	return final, nil
}

// configureRoot gives the debootstrapped root its host name and an fstab
// that leaves the root as the initramfs mounted it (no fsck). Which units
// run is decided at boot by the initramfs, so changing that needs no new
// image.
func configureRoot(root string) error {
	files := map[string]string{
		"etc/hostname": guestHostname,
		"etc/hosts":    guestHosts,
		"etc/fstab":    "# The initramfs mounts the root read-write; nothing else.\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("configuring the systemd image: %w", err)
		}
	}
	return nil
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
