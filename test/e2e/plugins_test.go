package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nsnet/nsnet/test/harness"
)

// Where a sandbox keeps things: the client-facing CNI directories and the recorder's files.
const (
	cniBinDir  = "/opt/cni/bin"
	cniConfDir = "/etc/cni/net.d"
	// realBinDir holds our plugin binaries; cniBinDir holds a recorder under each name.
	realBinDir = "/opt/nsnet-e2e/bin"
	callsDir   = "/run/nsnet-e2e/calls"
)

// ourPlugins are the plugin types this module builds.
var ourPlugins = []string{"bridge-lite", "portmap-lite"}

// recorderScript stands in for plugin %[1]s: it keeps a copy of the call's CNI_* environment
// and stdin, then executes the real plugin with the same environment and stdin, so the client
// still talks to our plugin and the test can check what the client sent.
const recorderScript = `#!/bin/sh
rec=%[2]s/$(date +%%s%%N)-$$
mkdir -p %[2]s
cat >"$rec.stdin"
{ echo "PLUGIN=%[1]s"; env | grep '^CNI_'; } >"$rec.env"
exec %[3]s/%[1]s <"$rec.stdin"
`

// installPlugins copies our plugins into the sandbox behind recorders, and the reference
// plugins named in extra (e.g. loopback, which containerd's CRI runs for every pod) as they are.
func (s *sandbox) installPlugins(t *testing.T, bins *harness.Binaries, extra ...string) {
	t.Helper()
	for _, p := range ourPlugins {
		s.copyFile(t, bins.Require(t, p), filepath.Join(realBinDir, p))
		s.writeFile(t, filepath.Join(cniBinDir, p), fmt.Appendf(nil, recorderScript, p, callsDir, realBinDir), 0o755)
	}
	for _, p := range extra {
		s.copyFile(t, bins.Require(t, p), filepath.Join(cniBinDir, p))
	}
}

func (s *sandbox) copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	s.writeFile(t, to, data, 0o755)
}

// installConflist copies cni-conf/<name> unchanged into the sandbox's /etc/cni/net.d and
// returns its parsed content.
func (s *sandbox) installConflist(t *testing.T, name string) *shippedConflist {
	t.Helper()
	c := loadShippedConflist(t, name)
	s.writeFile(t, filepath.Join(cniConfDir, name), c.raw, 0o644)
	return c
}

// shippedConflist is the part of a conflist in cni-conf/ the scenarios check against.
type shippedConflist struct {
	raw        []byte
	Name       string
	Bridge     string
	Subnets    []string
	IPAMDir    string
	StateDirs  []string
	Masquerade bool
}

func loadShippedConflist(t *testing.T, name string) *shippedConflist {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "cni-conf", name))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Name    string `json:"name"`
		Plugins []struct {
			Type     string `json:"type"`
			Bridge   string `json:"bridge"`
			IPMasq   bool   `json:"ipMasq"`
			StateDir string `json:"stateDir"`
			IPAM     struct {
				DataDir string `json:"dataDir"`
				Ranges  [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("parsing cni-conf/%s: %v", name, err)
	}
	c := &shippedConflist{raw: raw, Name: doc.Name}
	for _, p := range doc.Plugins {
		if p.StateDir != "" {
			c.StateDirs = append(c.StateDirs, p.StateDir)
		}
		if p.Type != "bridge-lite" {
			continue
		}
		c.Bridge, c.Masquerade, c.IPAMDir = p.Bridge, p.IPMasq, p.IPAM.DataDir
		for _, r := range p.IPAM.Ranges {
			for _, sub := range r {
				c.Subnets = append(c.Subnets, sub.Subnet)
			}
		}
	}
	if c.Bridge == "" || len(c.Subnets) == 0 || c.IPAMDir == "" {
		t.Fatalf("cni-conf/%s: no bridge-lite plugin with bridge, ranges and dataDir", name)
	}
	return c
}

// assertNoLeftovers checks the sandbox host after the client removed its containers: no links
// but the bridge, no firewall rules, no IPAM reservations or plugin state.
func (s *sandbox) assertNoLeftovers(t *testing.T, c *shippedConflist, containers ...*harness.NetNS) {
	t.Helper()
	opts := harness.LeftoverOptions{
		AllowLinks:   []string{c.Bridge},
		IPAMDataDirs: []string{s.path(c.IPAMDir)},
		Containers:   containers,
	}
	for _, d := range c.StateDirs {
		opts.StateDirs = append(opts.StateDirs, s.path(d))
	}
	harness.AssertNoLeftovers(t, s.Host, opts)
}

// pluginCall is one plugin execution as the recorder saw it.
type pluginCall struct {
	Plugin      string
	Command     string
	ContainerID string
	NetNS       string
	NetNSSet    bool // CNI_NETNS was in the environment (possibly empty)
	IfName      string
	Args        string
	Config      map[string]any
}

func (c pluginCall) String() string {
	return fmt.Sprintf("%s %s id=%s netns=%q ifname=%s", c.Plugin, c.Command, c.ContainerID, c.NetNS, c.IfName)
}

// prevResult reports whether the call's configuration carried a prevResult.
func (c pluginCall) prevResult() bool { _, ok := c.Config["prevResult"]; return ok }

// calls returns the plugin executions recorded so far, oldest first.
func (s *sandbox) calls(t *testing.T) []pluginCall {
	t.Helper()
	envs, err := filepath.Glob(s.path(callsDir) + "/*.env")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(envs)
	var out []pluginCall
	for _, f := range envs {
		env, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c pluginCall
		for _, line := range strings.Split(string(env), "\n") {
			k, v, _ := strings.Cut(line, "=")
			switch k {
			case "PLUGIN":
				c.Plugin = v
			case "CNI_COMMAND":
				c.Command = v
			case "CNI_CONTAINERID":
				c.ContainerID = v
			case "CNI_NETNS":
				c.NetNS, c.NetNSSet = v, true
			case "CNI_IFNAME":
				c.IfName = v
			case "CNI_ARGS":
				c.Args = v
			}
		}
		stdin, err := os.ReadFile(strings.TrimSuffix(f, ".env") + ".stdin")
		if err != nil {
			t.Fatal(err)
		}
		if len(stdin) > 0 {
			if err := json.Unmarshal(stdin, &c.Config); err != nil {
				t.Fatalf("recorded stdin of %s is not JSON: %v\n%s", c, err, stdin)
			}
		}
		out = append(out, c)
	}
	return out
}

// filterCalls returns the calls of plugin with one of the commands.
func filterCalls(calls []pluginCall, plugin string, commands ...string) []pluginCall {
	var out []pluginCall
	for _, c := range calls {
		if c.Plugin == plugin && slices.Contains(commands, c.Command) {
			out = append(out, c)
		}
	}
	return out
}

func logCalls(t *testing.T, calls []pluginCall) {
	t.Helper()
	var b strings.Builder
	for _, c := range calls {
		fmt.Fprintf(&b, "  %s prevResult=%v\n", c, c.prevResult())
	}
	t.Logf("plugin calls:\n%s", b.String())
}
