package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// imageRef names the image every scenario runs. The "localhost/" domain tells clients that it
// is local, so none of them looks for it in a registry.
const imageRef = "localhost/nsnet-e2e/busybox:1"

// busyboxPath is where Debian's busybox-static puts its binary.
const busyboxPath = "/bin/busybox"

// whoamiCGI makes the image's web server answer /cgi-bin/whoami with the client address it
// sees, which tells whether a request was masqueraded or DNATed.
const whoamiCGI = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n"

// imageEpoch is every file's mtime and the image's creation time, so the image is the same
// bytes on every run.
var imageEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// imageCmd is the image's default command: it idles, so the image also serves as the pause
// image of the CRI scenario. Containers that serve run httpdCmd instead.
var imageCmd = []string{"/bin/sleep", "2147483647"}

// httpdCmd serves /www on port 80, in the foreground so it is the container's main process.
var httpdCmd = []string{"/bin/httpd", "-f", "-p", "80", "-h", "/www"}

var imageOnce struct {
	sync.Once
	dir  string
	path string
	err  error
}

// busyboxImage returns the path of the docker-archive of the test image, built once per test
// binary; it skips the test when busybox-static is not installed.
func busyboxImage(t *testing.T) string {
	t.Helper()
	if err := checkStatic(busyboxPath); err != nil {
		t.Skipf("no static busybox to build the test image from (apt-get install busybox-static, or make deps): %v", err)
	}
	imageOnce.Do(func() {
		imageOnce.dir, imageOnce.err = os.MkdirTemp("", "nsnet-e2e-image-")
		if imageOnce.err != nil {
			return
		}
		imageOnce.path = filepath.Join(imageOnce.dir, "busybox.tar")
		imageOnce.err = writeImageArchive(imageOnce.path, imageRef, busyboxPath)
	})
	if imageOnce.err != nil {
		t.Fatalf("building the test image: %v", imageOnce.err)
	}
	return imageOnce.path
}

// removeImage deletes the image built by busyboxImage; TestMain calls it after the tests.
func removeImage() {
	if imageOnce.dir != "" {
		os.RemoveAll(imageOnce.dir)
	}
}

// checkStatic fails unless path is an ELF executable without a program interpreter: the image
// has no C library for a dynamic one.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", path)
		}
	}
	return nil
}

// writeImageArchive writes a docker-archive (the `docker save` layout that both `ctr images
// import` and `podman load` read) of a one-layer image tagged ref: busybox with a symlink per
// applet, /etc/passwd and /etc/group, and /www with an index page and cgi-bin/whoami.
func writeImageArchive(path, ref, busybox string) error {
	layer, err := buildLayer(busybox)
	if err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer)
	layerHex := hex.EncodeToString(layerSum[:])
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      imageEpoch.Format(time.RFC3339),
		"config": map[string]any{
			"Env":        []string{"PATH=/bin"},
			"Cmd":        imageCmd,
			"WorkingDir": "/",
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerHex}},
		"history": []map[string]string{{"created": imageEpoch.Format(time.RFC3339), "created_by": "nsnet e2e image builder"}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	layerName := layerHex + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": []string{ref},
		"Layers":   []string{layerName},
	}})
	if err != nil {
		return err
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	if err := addDir(tw, layerHex); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{layerName, layer}, {configName, config}, {"manifest.json", manifest}} {
		if err := addFile(tw, f.name, f.data, 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}

// buildLayer returns the uncompressed layer tarball.
func buildLayer(busybox string) ([]byte, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sys", "tmp", "var", "www", "www/cgi-bin"} {
		if err := addDir(tw, d); err != nil {
			return nil, err
		}
	}
	if err := addFile(tw, "bin/busybox", bin, 0o755); err != nil {
		return nil, err
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: imageEpoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		name string
		data string
		mode int64
	}{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644},
		{"www/index.html", "nsnet-e2e\n", 0o644},
		{"www/cgi-bin/whoami", whoamiCGI, 0o755},
	} {
		if err := addFile(tw, f.name, []byte(f.data), f.mode); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addDir(tw *tar.Writer, name string) error {
	mode := int64(0o755)
	if name == "tmp" {
		mode = 0o1777
	}
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: imageEpoch})
}

func addFile(tw *tar.Writer, name string, data []byte, mode int64) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: imageEpoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// TestImageArchive checks the archive's structure the way the importers read it: the manifest
// names the config and the layer, the config's diff_id is the layer's digest, and the layer
// holds busybox, the applet links and the web root.
func TestImageArchive(t *testing.T) {
	path := busyboxImage(t)
	files := map[string][]byte{}
	readTar(t, mustOpen(t, path), func(h *tar.Header, r io.Reader) {
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = b
	})
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v %s", err, files["manifest.json"])
	}
	m := manifest[0]
	if len(m.RepoTags) != 1 || m.RepoTags[0] != imageRef || len(m.Layers) != 1 {
		t.Fatalf("manifest %+v: want one tag %s and one layer", m, imageRef)
	}
	var config struct {
		OS     string `json:"os"`
		Config struct{ Cmd []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(files[m.Config], &config); err != nil {
		t.Fatalf("config %s: %v", m.Config, err)
	}
	layer, ok := files[m.Layers[0]]
	if !ok {
		t.Fatalf("layer %s missing from the archive", m.Layers[0])
	}
	sum := sha256.Sum256(layer)
	if want := "sha256:" + hex.EncodeToString(sum[:]); len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != want {
		t.Errorf("diff_ids %v, want [%s]", config.RootFS.DiffIDs, want)
	}
	if config.OS != "linux" || strings.Join(config.Config.Cmd, " ") != strings.Join(imageCmd, " ") {
		t.Errorf("config os %q cmd %v", config.OS, config.Config.Cmd)
	}
	entries := map[string]*tar.Header{}
	readTar(t, bytes.NewReader(layer), func(h *tar.Header, _ io.Reader) { entries[h.Name] = h })
	for name, typ := range map[string]byte{
		"bin/busybox": tar.TypeReg, "bin/sh": tar.TypeSymlink, "bin/httpd": tar.TypeSymlink,
		"bin/wget": tar.TypeSymlink, "bin/ip": tar.TypeSymlink, "bin/sleep": tar.TypeSymlink,
		"www/cgi-bin/whoami": tar.TypeReg, "tmp/": tar.TypeDir,
	} {
		if h, ok := entries[name]; !ok || h.Typeflag != typ {
			t.Errorf("layer entry %s: %+v, want type %c", name, h, typ)
		}
	}
}

func mustOpen(t *testing.T, path string) io.Reader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}

func readTar(t *testing.T, r io.Reader, f func(*tar.Header, io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		f(h, tr)
	}
}
