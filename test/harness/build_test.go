package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(gomod), "module github.com/nsnet/nsnet\n") {
		t.Errorf("%s/go.mod is not nsnet's", root)
	}
}

func TestReferencePluginsInstalled(t *testing.T) {
	dir := ReferencePlugins(t)
	b := &Binaries{ReferenceDir: dir, CNIPath: dir}
	for _, name := range []string{"bridge", "host-local", "portmap", "tuning", "firewall", "loopback", "static"} {
		b.Require(t, name)
	}
}
