package cninet

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// fakePlugin is a plugin script that logs, to $PIPELINE_LOG, when it
// starts, when it has read its configuration (saved to NAME.stdin) and
// when it ends, after a pause that gives the next plugin time to start.
// It prints result, or fails with CNI error 100 when fail is set.
func fakePlugin(t *testing.T, dir, name, result string, fail bool) {
	t.Helper()
	exit := "printf '%s' '" + result + "'"
	if fail {
		exit = `printf '{"cniVersion":"1.0.0","code":100,"msg":"` + name + ` failed"}'; exit 1`
	}
	script := `#!/bin/sh
echo "$CNI_COMMAND ` + name + ` start" >> "$PIPELINE_LOG"
cat > "` + filepath.Join(dir, name+".stdin") + `"
echo "$CNI_COMMAND ` + name + ` read" >> "$PIPELINE_LOG"
sleep 0.2
echo "$CNI_COMMAND ` + name + ` end" >> "$PIPELINE_LOG"
` + exit + "\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// pipelineNet is a network of the two early-startable plugin types, as
// fake plugins in a temp dir, and the log they write.
func pipelineNet(t *testing.T, failing string) (*Network, string, string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	t.Setenv("PIPELINE_LOG", log)
	fakePlugin(t, dir, "bridge-lite", `{"cniVersion":"1.0.0","interfaces":[{"name":"from-bridge-lite"}]}`, failing == "bridge-lite")
	fakePlugin(t, dir, "portmap-lite", `{"cniVersion":"1.0.0","interfaces":[{"name":"from-portmap-lite"}]}`, failing == "portmap-lite")
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"pipe","plugins":[{"type":"bridge-lite"},{"type":"portmap-lite"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return &Network{List: list, BinDirs: []string{dir}, CacheDir: filepath.Join(dir, "cache")}, dir, log
}

func readLog(t *testing.T, log string) []string {
	t.Helper()
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func indexOf(lines []string, line string) int {
	for i, l := range lines {
		if l == line {
			return i
		}
	}
	return -1
}

func TestPipelinedChain(t *testing.T) {
	n, dir, log := pipelineNet(t, "")
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/proc/self/ns/net", IfName: "eth0"}
	res, err := n.addList(context.Background(), n.List, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if !strings.Contains(mustJSON(t, res), "from-portmap-lite") {
		t.Errorf("result %s is not the last plugin's", mustJSON(t, res))
	}
	stdin, err := os.ReadFile(filepath.Join(dir, "portmap-lite.stdin"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stdin), `"prevResult"`) || !strings.Contains(string(stdin), "from-bridge-lite") {
		t.Errorf("second plugin's configuration lacks the first one's result: %s", stdin)
	}
	if err := n.delList(context.Background(), n.List, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	lines := readLog(t, log)
	for _, c := range []struct{ verb, first, second string }{
		{"ADD", "bridge-lite", "portmap-lite"},
		{"DEL", "portmap-lite", "bridge-lite"},
	} {
		end := indexOf(lines, c.verb+" "+c.first+" end")
		start, read := indexOf(lines, c.verb+" "+c.second+" start"), indexOf(lines, c.verb+" "+c.second+" read")
		if end < 0 || start < 0 || read < 0 {
			t.Fatalf("%s: log lacks runs of both plugins:\n%s", c.verb, strings.Join(lines, "\n"))
		}
		if start > end {
			t.Errorf("%s: %s started only after %s ended:\n%s", c.verb, c.second, c.first, strings.Join(lines, "\n"))
		}
		if read < end {
			t.Errorf("%s: %s got its configuration before %s ended:\n%s", c.verb, c.second, c.first, strings.Join(lines, "\n"))
		}
	}
}

func TestPipelinedFailureStopsChain(t *testing.T) {
	n, _, log := pipelineNet(t, "bridge-lite")
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/proc/self/ns/net", IfName: "eth0"}
	_, err := n.addList(context.Background(), n.List, rt)
	if err == nil || !strings.Contains(err.Error(), "bridge-lite failed") {
		t.Fatalf("ADD = %v, want the first plugin's error", err)
	}
	lines := readLog(t, log)
	if indexOf(lines, "ADD portmap-lite read") >= 0 {
		t.Errorf("the plugin after the failed one was given its configuration:\n%s", strings.Join(lines, "\n"))
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
