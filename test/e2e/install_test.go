package e2e

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/nsnet/nsnet/test/harness"
)

// TestMakeInstall runs `make install` into a DESTDIR: it installs every plugin a shipped
// conflist names and the nsnet command; a second run leaves the identical files alone; a
// different file already in place stops the install, named in the error together with FORCE=1,
// and nothing else is written; FORCE=1 replaces it. It builds into a temp dir (BIN=), so the
// working tree's bin/ is not touched. No root needed.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dest, bin := t.TempDir(), filepath.Join(t.TempDir(), "bin")
	install := func(extra ...string) (string, string, error) {
		cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", root, "install", "DESTDIR=" + dest, "BIN=" + bin}, extra...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}
	pluginDir, nsnet := filepath.Join(dest, "opt", "cni", "bin"), filepath.Join(dest, "usr", "local", "bin", "nsnet")
	installed := map[string]string{nsnet: filepath.Join(bin, "nsnet")}
	for _, p := range ourPlugins {
		installed[filepath.Join(pluginDir, p)] = filepath.Join(bin, p)
	}

	if out, errOut, err := install(); err != nil {
		t.Fatalf("make install: %v\n%s%s", err, out, errOut)
	}
	for dst, src := range installed {
		assertSameFile(t, dst, src)
		if st, err := os.Stat(dst); err == nil && st.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %v, want 0755", dst, st.Mode().Perm())
		}
	}
	confs, _ := filepath.Glob(filepath.Join(root, "cni-conf", "*.conflist"))
	for _, f := range confs {
		list, err := libcni.ConfListFromFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range list.Plugins {
			if _, err := os.Stat(filepath.Join(pluginDir, p.Network.Type)); err != nil {
				t.Errorf("%s names plugin %q, which make install did not install: %v", filepath.Base(f), p.Network.Type, err)
			}
		}
	}

	before := modTimes(t, installed)
	out, errOut, err := install()
	if err != nil {
		t.Fatalf("second make install over identical files: %v\n%s%s", err, out, errOut)
	}
	if after := modTimes(t, installed); !maps.Equal(before, after) {
		t.Errorf("second make install rewrote identical files:\n%s", out)
	}

	victim := filepath.Join(pluginDir, "bridge-lite")
	users := []byte("#!/bin/sh\n# someone else's bridge-lite\n")
	if err := os.WriteFile(victim, users, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(nsnet); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = install()
	if err == nil {
		t.Fatalf("make install overwrote a different %s:\n%s", victim, out)
	}
	if !strings.Contains(errOut, victim) || !strings.Contains(errOut, "FORCE=1") {
		t.Errorf("make install's error does not name %s and FORCE=1:\n%s", victim, errOut)
	}
	if got, _ := os.ReadFile(victim); !bytes.Equal(got, users) {
		t.Errorf("make install changed %s although it refused to install", victim)
	}
	if _, err := os.Stat(nsnet); err == nil {
		t.Errorf("make install refused to overwrite %s but installed %s anyway", victim, nsnet)
	}

	if out, errOut, err := install("FORCE=1"); err != nil {
		t.Fatalf("make install FORCE=1: %v\n%s%s", err, out, errOut)
	}
	for dst, src := range installed {
		assertSameFile(t, dst, src)
	}
}

func assertSameFile(t *testing.T, got, want string) {
	t.Helper()
	a, err := os.ReadFile(got)
	if err != nil {
		t.Errorf("not installed: %v", err)
		return
	}
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from the built %s", got, want)
	}
}

func modTimes(t *testing.T, files map[string]string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = st.ModTime().UnixNano()
	}
	return out
}
