package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nsnet/nsnet/test/harness"
)

// etcNetns is where iproute2 reads per-netns files; the tests never write to it on the host.
const etcNetns = "/etc/netns"

// privateEtc is a mount namespace of the test's own, held open by a sleep process, in which a
// temp dir is bind-mounted over /etc/netns (and optionally a file over /etc/resolv.conf). Plugins
// and `ip netns exec` run in it see the test's files at the real paths. Its mounts are slaves of
// the host's: namespaces the test pins in /run/netns later still show up inside, and none of its
// own mounts reach the host's mount table.
type privateEtc struct {
	netnsDir string // what /etc/netns shows inside
	mntNS    string // /proc/PID/ns/mnt of the holder
}

func newPrivateEtc(t *testing.T, hostResolvConf string) *privateEtc {
	t.Helper()
	ensureEtcNetnsDir(t)
	p := &privateEtc{netnsDir: t.TempDir()}
	fake := ""
	if hostResolvConf != "" {
		fake = filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(fake, []byte(hostResolvConf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `mount --bind "$1" /etc/netns || exit 1
if [ -n "$2" ]; then mount --bind "$2" /etc/resolv.conf || exit 1; fi
echo ready
exec sleep 3600`
	cmd := exec.Command("unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script, "sh", p.netnsDir, fake)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting private mount namespace: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("private mount namespace failed to set up: %s", stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("private mount namespace not ready after 10s: %s", stderr.String())
	}
	p.mntNS = fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)
	return p
}

// ensureEtcNetnsDir creates /etc/netns when it is missing, since a bind mount needs its target,
// and removes it again at the end if it is still empty.
func ensureEtcNetnsDir(t *testing.T) {
	t.Helper()
	err := os.Mkdir(etcNetns, 0o755)
	if errors.Is(err, fs.ErrExist) {
		return
	}
	if err != nil {
		t.Fatalf("creating %s: %v", etcNetns, err)
	}
	t.Cleanup(func() {
		if err := os.Remove(etcNetns); err != nil && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			t.Errorf("removing %s: %v", etcNetns, err)
		}
	})
}

// command runs args inside the private mount namespace (and the caller's network namespace).
func (p *privateEtc) command(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--mount=" + p.mntNS, "--"}, args...)...)
}

// output runs args inside the private mount namespace and returns stdout.
func (p *privateEtc) output(t *testing.T, args ...string) string {
	t.Helper()
	cmd := p.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// plugin runs bridge-lite like harness.ExecPlugin, but inside the private mount namespace.
func (p *privateEtc) plugin(t *testing.T, host *harness.Host, plugin string, inv harness.Invocation) *harness.PluginOutput {
	t.Helper()
	cmd := p.command(plugin)
	cmd.Env = pluginEnvironment(inv)
	cmd.Stdin = bytes.NewReader(inv.Config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := host.Do(cmd.Run)
	out := &harness.PluginOutput{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		out.ExitCode = exitErr.ExitCode()
		var e types.Error
		if json.Unmarshal(out.Stdout, &e) == nil {
			out.Err = &e
		}
	case err != nil:
		t.Fatalf("running bridge-lite %s: %v", inv.Command, err)
	}
	return out
}

func (p *privateEtc) mustSucceed(t *testing.T, host *harness.Host, plugin string, inv harness.Invocation) *harness.PluginOutput {
	t.Helper()
	out := p.plugin(t, host, plugin, inv)
	if out.Failed() {
		t.Fatalf("bridge-lite %s %s failed:\n%s", inv.Command, inv.ContainerID, out)
	}
	return out
}

var testDNS = types.DNS{
	Nameservers: []string{"10.150.0.53", "fd00:150::53"},
	Domain:      "corp.test",
	Search:      []string{"corp.test", "test"},
	Options:     []string{"ndots:2", "timeout:1"},
}

func dnsConf(d types.DNS) map[string]any {
	return map[string]any{"nameservers": d.Nameservers, "domain": d.Domain, "search": d.Search, "options": d.Options}
}

// assertResolvConf checks a generated resolv.conf: the marker line naming the attachment, then
// exactly the lines of body.
func assertResolvConf(t *testing.T, got, containerID, ifName, body string) {
	t.Helper()
	first, rest, _ := strings.Cut(got, "\n")
	if !strings.HasPrefix(first, "# Generated by bridge-lite for container "+containerID+" interface "+ifName) {
		t.Errorf("first line %q does not mark the file as bridge-lite's for %s/%s", first, containerID, ifName)
	}
	if rest != body {
		t.Errorf("resolv.conf body:\n%s\nwant:\n%s", rest, body)
	}
}

const testDNSBody = "nameserver 10.150.0.53\nnameserver fd00:150::53\ndomain corp.test\nsearch corp.test test\noptions ndots:2 timeout:1\n"

func assertResultDNS(t *testing.T, res *types100.Result, want types.DNS) {
	t.Helper()
	if !reflect.DeepEqual(res.DNS, want) {
		t.Errorf("result dns = %+v, want %+v", res.DNS, want)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return string(b)
}

// assertNoMountsOf fails when the host's mount table mentions any of names.
func assertNoMountsOf(t *testing.T, names ...string) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		for _, n := range names {
			if strings.Contains(line, n) {
				t.Errorf("mount left behind: %s", line)
			}
		}
	}
}

// TestNetnsConfNamedNetns: ADD into a named netns with a dns config writes
// /etc/netns/NAME/resolv.conf, which `ip netns exec` and `nsnet netns exec` both bind over
// /etc/resolv.conf; CHECK notices a changed file; DEL removes the file and the directory.
func TestNetnsConfNamedNetns(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	nsnet := bins.RequireNsnet(t)
	plugin := bins.Require(t, "bridge-lite")
	host := harness.NewHost(t)
	c := host.NewContainer(t)
	pe := newPrivateEtc(t, "")
	n := newSpecNet(t, "1.0.0", "bncnamed", "10.150.0.0/24")
	conf := n.conf(t, map[string]any{"dns": dnsConf(testDNS)})
	inv := harness.Invocation{Command: "ADD", ContainerID: "nc-named", NetNS: c.Path(), IfName: "eth0", Path: bins.CNIPath, Config: conf}

	out := pe.mustSucceed(t, host, plugin, inv)
	res, err := out.Result100()
	if err != nil {
		t.Fatal(err)
	}
	assertResultDNS(t, res, testDNS)
	file := filepath.Join(pe.netnsDir, c.Name(), "resolv.conf")
	content := readString(t, file)
	assertResolvConf(t, content, "nc-named", "eth0", testDNSBody)
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("%s mode = %v (%v), want 0644", file, st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(file)); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("%s mode = %v (%v), want 0755", filepath.Dir(file), st.Mode(), err)
	}
	if rec := readString(t, n.stateFile("nc-named", "eth0")); !strings.Contains(rec, filepath.Join(etcNetns, c.Name(), "resolv.conf")) {
		t.Errorf("record does not name the resolv.conf: %s", rec)
	}

	if got := pe.output(t, "ip", "netns", "exec", c.Name(), "cat", "/etc/resolv.conf"); got != content {
		t.Errorf("ip netns exec sees /etc/resolv.conf:\n%s\nwant:\n%s", got, content)
	}
	if got := pe.output(t, nsnet, "netns", "exec", c.Name(), "--", "cat", "/etc/resolv.conf"); got != content {
		t.Errorf("nsnet netns exec sees /etc/resolv.conf:\n%s\nwant:\n%s", got, content)
	}
	// The same from the host's mount namespace, with the directory given by the test variable.
	cmd := exec.Command(nsnet, "netns", "exec", c.Name(), "--", "cat", "/etc/resolv.conf")
	cmd.Env = append(os.Environ(), "NSNET_NETNS_CONF_DIR="+pe.netnsDir)
	if got, err := cmd.Output(); err != nil || string(got) != content {
		t.Errorf("NSNET_NETNS_CONF_DIR=%s nsnet netns exec: %v\n%s", pe.netnsDir, err, got)
	}
	if got := pe.output(t, nsnet, "netns", "exec", c.Name(), "ls", "/sys/class/net"); got != "eth0\nlo\n" {
		t.Errorf("/sys/class/net under nsnet netns exec lists %q, want the container's eth0 and lo", got)
	}

	withPrev := n.conf(t, map[string]any{"dns": dnsConf(testDNS), "prevResult": json.RawMessage(out.Stdout)})
	check := inv
	check.Command, check.Config = "CHECK", withPrev
	assertNoOutput(t, "CHECK", pe.mustSucceed(t, host, plugin, check))
	if err := os.WriteFile(file, []byte(content+"nameserver 192.0.2.66\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	requireCNIError(t, pe.plugin(t, host, plugin, check), types.ErrInternal, "changed")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	assertNoOutput(t, "CHECK", pe.mustSucceed(t, host, plugin, check))

	del := inv
	del.Command, del.Config = "DEL", withPrev
	assertNoOutput(t, "DEL", pe.mustSucceed(t, host, plugin, del))
	assertExists(t, file, false)
	assertExists(t, filepath.Dir(file), false)
	if got := pe.output(t, "ip", "netns", "exec", c.Name(), "cat", "/etc/resolv.conf"); got != readString(t, "/etc/resolv.conf") {
		t.Errorf("after DEL, ip netns exec still sees a per-netns resolv.conf:\n%s", got)
	}
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
	assertNoMountsOf(t, etcNetns)
}

// TestNetnsConfLeavesOthersAlone: with netnsConfDir pointing at a temp dir, an existing
// user-written file is neither replaced nor removed (its DNS is still in the result), and an
// unnamed netns path or perNetnsResolvConf false writes nothing.
func TestNetnsConfLeavesOthersAlone(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.0.0", "bncothers", "10.151.0.0/24")

	// A process in an unnamed view of a container netns: /proc/PID/ns/net.
	unnamedNS := host.NewContainer(t)
	sleep := exec.Command("sleep", "3600")
	if err := unnamedNS.Do(sleep.Start); err != nil {
		t.Fatalf("starting a process in %s: %v", unnamedNS.Name(), err)
	}
	t.Cleanup(func() {
		sleep.Process.Kill()
		sleep.Wait()
	})
	procPath := fmt.Sprintf("/proc/%d/ns/net", sleep.Process.Pid)

	tests := []struct {
		name     string
		extra    map[string]any
		netns    func(c *harness.NetNS) string
		userFile string // written before ADD when set
	}{
		{name: "user-written file", userFile: "# mine\nnameserver 192.0.2.1\n"},
		{name: "unnamed netns path", netns: func(*harness.NetNS) string { return procPath }},
		{name: "perNetnsResolvConf false", extra: map[string]any{"perNetnsResolvConf": false}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			extra := map[string]any{"dns": dnsConf(testDNS), "netnsConfDir": dir}
			maps.Copy(extra, tt.extra)
			conf := n.conf(t, extra)
			c, path := unnamedNS, procPath
			if tt.netns == nil {
				c = host.NewContainer(t)
				path = c.Path()
			}
			id := fmt.Sprintf("nc-other-%d", i)
			var userPath string
			if tt.userFile != "" {
				userPath = filepath.Join(dir, c.Name(), "resolv.conf")
				if err := os.MkdirAll(filepath.Dir(userPath), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(userPath, []byte(tt.userFile), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			inv := harness.Invocation{Command: "ADD", ContainerID: id, NetNS: path, IfName: "eth0", Path: bins.CNIPath, Config: conf}
			out := s.mustSucceed(inv)
			res, err := out.Result100()
			if err != nil {
				t.Fatal(err)
			}
			assertResultDNS(t, res, testDNS)
			assertOnly := func(when string) {
				t.Helper()
				var files []string
				filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
					if err == nil && !d.IsDir() {
						files = append(files, p)
					}
					return err
				})
				var want []string
				if userPath != "" {
					want = []string{userPath}
					if got := readString(t, userPath); got != tt.userFile {
						t.Errorf("%s: user file changed to %q", when, got)
					}
				}
				if !slices.Equal(files, want) {
					t.Errorf("%s: files under netnsConfDir %v, want %v", when, files, want)
				}
			}
			assertOnly("after ADD")
			if rec := readString(t, n.stateFile(id, "eth0")); strings.Contains(rec, "resolvConf") {
				t.Errorf("record names a resolv.conf the plugin did not write: %s", rec)
			}
			withPrev := n.conf(t, with(extra, "prevResult", json.RawMessage(out.Stdout)))
			check := inv
			check.Command, check.Config = "CHECK", withPrev
			assertNoOutput(t, "CHECK", s.mustSucceed(check))
			del := check
			del.Command = "DEL"
			assertNoOutput(t, "DEL", s.mustSucceed(del))
			assertOnly("after DEL")
			harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
		})
	}
}

// TestNetnsConfSources: where the written DNS comes from. With perNetnsResolvConf "host" and no
// DNS configured, the host's /etc/resolv.conf (here a fake one, bound over it in the test's
// mount namespace) is used without its loopback stub and is reported in the result; IPAM's
// resolvConf is used like the dns key; without any DNS nothing is written.
func TestNetnsConfSources(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	plugin := bins.Require(t, "bridge-lite")
	host := harness.NewHost(t)
	pe := newPrivateEtc(t, "# stub resolver\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nsearch host.test\noptions edns0 trust-ad\n")
	if got := pe.output(t, "cat", "/etc/resolv.conf"); !strings.Contains(got, "192.0.2.53") {
		t.Fatalf("fake host resolv.conf not in place: %q", got)
	}
	n := newSpecNet(t, "1.0.0", "bncsrc", "10.152.0.0/24")
	ipamResolv := filepath.Join(t.TempDir(), "ipam-resolv.conf")
	if err := os.WriteFile(ipamResolv, []byte("nameserver 198.51.100.7\nsearch ipam.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostDNS := types.DNS{Nameservers: []string{"192.0.2.53"}, Search: []string{"host.test"}, Options: []string{"edns0", "trust-ad"}}
	ipamDNS := types.DNS{Nameservers: []string{"198.51.100.7"}, Search: []string{"ipam.test"}}

	tests := []struct {
		name  string
		extra map[string]any
		want  types.DNS // what the result reports
		body  string    // the file after the marker; "" for no file
	}{
		{
			name:  "host fallback drops the loopback stub",
			extra: map[string]any{"perNetnsResolvConf": "host"},
			want:  hostDNS,
			body:  "nameserver 192.0.2.53\nsearch host.test\noptions edns0 trust-ad\n",
		},
		{
			name:  "host mode prefers the dns key",
			extra: map[string]any{"perNetnsResolvConf": "host", "dns": dnsConf(testDNS)},
			want:  testDNS,
			body:  testDNSBody,
		},
		{
			name:  "IPAM resolvConf",
			extra: map[string]any{"ipam": with(n.ipam(), "resolvConf", ipamResolv)},
			want:  ipamDNS,
			body:  "nameserver 198.51.100.7\nsearch ipam.test\n",
		},
		{name: "no DNS known, no file"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := host.NewContainer(t)
			id := fmt.Sprintf("nc-src-%d", i)
			inv := harness.Invocation{Command: "ADD", ContainerID: id, NetNS: c.Path(), IfName: "eth0", Path: bins.CNIPath, Config: n.conf(t, tt.extra)}
			out := pe.mustSucceed(t, host, plugin, inv)
			res, err := out.Result100()
			if err != nil {
				t.Fatal(err)
			}
			assertResultDNS(t, res, tt.want)
			file := filepath.Join(pe.netnsDir, c.Name(), "resolv.conf")
			if tt.body == "" {
				assertExists(t, filepath.Dir(file), false)
			} else {
				content := readString(t, file)
				assertResolvConf(t, content, id, "eth0", tt.body)
				if got := pe.output(t, "ip", "netns", "exec", c.Name(), "cat", "/etc/resolv.conf"); got != content {
					t.Errorf("ip netns exec sees /etc/resolv.conf:\n%s", got)
				}
			}
			del := inv
			del.Command = "DEL"
			assertNoOutput(t, "DEL", pe.mustSucceed(t, host, plugin, del))
			assertExists(t, filepath.Dir(file), false)
			harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
		})
	}
	if ents, err := os.ReadDir(pe.netnsDir); err != nil || len(ents) != 0 {
		t.Errorf("netns conf dir holds %v (%v), want nothing", ents, err)
	}
}

// TestNetnsConfFailedAddAndBadConfig: an ADD that fails after writing the file removes it again,
// and an invalid perNetnsResolvConf is refused with code 7 before anything is made.
func TestNetnsConfFailedAddAndBadConfig(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.0.0", "bncfail", "10.153.0.0/24")
	c := host.NewContainer(t)
	dir := t.TempDir()

	for _, v := range []any{"yes", 1, map[string]any{"host": true}} {
		conf := n.conf(t, map[string]any{"dns": dnsConf(testDNS), "netnsConfDir": dir, "perNetnsResolvConf": v})
		out := s.exec(s.inv("ADD", "nc-fail", c, "eth0", conf))
		requireCNIError(t, out, types.ErrInvalidNetworkConfig, "perNetnsResolvConf")
	}
	conf := n.conf(t, map[string]any{"dns": dnsConf(testDNS), "netnsConfDir": "etc/netns"})
	requireCNIError(t, s.exec(s.inv("ADD", "nc-fail", c, "eth0", conf)), types.ErrInvalidNetworkConfig, "netnsConfDir")

	// A non-bridge link with the bridge's name makes ADD fail after IPAM and the file.
	impostor := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.bridge}, PeerName: n.bridge + "p"}
	if err := netlinkIn(t, host.NetNS).LinkAdd(impostor); err != nil {
		t.Fatalf("adding veth %s: %v", n.bridge, err)
	}
	conf = n.conf(t, map[string]any{"dns": dnsConf(testDNS), "netnsConfDir": dir})
	out := s.exec(s.inv("ADD", "nc-fail", c, "eth0", conf))
	if !out.Failed() {
		t.Fatalf("ADD over a veth named %s succeeded:\n%s", n.bridge, out)
	}
	if out.Err == nil || !strings.Contains(out.Err.Msg, "not a bridge") {
		t.Errorf("ADD failed for another reason than the veth:\n%s", out)
	}
	assertExists(t, filepath.Join(dir, c.Name()), false)
	if files := n.stateFiles(t); len(files) != 0 {
		t.Errorf("state files left: %v", files)
	}
	harness.AssertNoLeftovers(t, host, harness.LeftoverOptions{
		AllowLinks:   []string{n.bridge, n.bridge + "p"},
		IPAMDataDirs: []string{n.dataDir},
		StateDirs:    []string{n.stateDir},
		Containers:   []*harness.NetNS{c},
	})
}

// TestNetnsConfKilledAdd SIGKILLs ADD at random points: whatever a killed ADD wrote into the
// netns conf dir (the file, its temp file, the directory) is named by the record written before
// it, so the DEL that follows removes it.
func TestNetnsConfKilledAdd(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	plugin := bins.Require(t, "bridge-lite")
	host := harness.NewHost(t)
	s := newSpec(t, host, bins)
	n := newSpecNet(t, "1.0.0", "bnckill", "10.155.0.0/24")
	c := host.NewContainer(t)
	dir := t.TempDir()
	conf := n.conf(t, map[string]any{"dns": dnsConf(testDNS), "netnsConfDir": dir})
	stdinFile := filepath.Join(t.TempDir(), "add.json")
	if err := os.WriteFile(stdinFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	var normal time.Duration
	for range 3 {
		out := s.mustSucceed(s.inv("ADD", "nc-kill-probe", c, "eth0", conf))
		normal = max(normal, out.Duration)
		s.mustSucceed(s.inv("DEL", "nc-kill-probe", c, "eth0", conf))
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0x6e73636f))
	t.Logf("random seed %d; kills land uniformly in 0..%s", seed, normal)
	killedWithFiles := 0
	for r := range 20 {
		cid := fmt.Sprintf("nc-kill-%02d", r)
		inv := harness.Invocation{Command: "ADD", ContainerID: cid, NetNS: c.Path(), IfName: "eth0", Path: bins.CNIPath}
		delay := time.Duration(rng.Int64N(int64(normal) + 1))
		killed, err := killedRun(host, plugin, inv, stdinFile, delay)
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		if _, err := os.Stat(filepath.Join(dir, c.Name())); killed && err == nil {
			killedWithFiles++
		}
		s.mustSucceed(s.inv("DEL", cid, c, "eth0", conf))
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Fatalf("round %d (killed: %v, after %s): DEL left %v in the netns conf dir (%v)", r, killed, delay, ents, err)
		}
	}
	t.Logf("%d kills landed after the directory was made", killedWithFiles)
	harness.AssertNoLeftovers(t, host, n.leftoverOptions(c))
}

// nsnetCmd runs the nsnet binary and returns its stdout, stderr and exit code.
func nsnetCmd(t *testing.T, nsnet string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(nsnet, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		return stdout.String(), stderr.String(), exitErr.ExitCode()
	case err != nil:
		t.Fatalf("running nsnet %s: %v", strings.Join(args, " "), err)
	}
	return stdout.String(), stderr.String(), 0
}

func ipNetnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// TestNsnetNetns: `nsnet netns add/ls/exec/del` against iproute2: each sees and uses the
// other's namespaces, exec gives the command's exit code, flags after NAME belong to the
// command, per-netns files are bound over /etc and nothing is left mounted.
func TestNsnetNetns(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	nsnet := bins.RequireNsnet(t)
	ipMade := harness.NewNetNS(t, "ipmade")
	name := ipMade.Name() + "-nsnet"
	t.Cleanup(func() {
		if slices.Contains(ipNetnsList(t), name) {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		}
		assertNoMountsOf(t, name)
	})

	if _, stderr, code := nsnetCmd(t, nsnet, nil, "netns", "add", name); code != 0 {
		t.Fatalf("nsnet netns add: exit %d: %s", code, stderr)
	}
	if _, stderr, code := nsnetCmd(t, nsnet, nil, "netns", "add", name); code != 1 || !strings.Contains(stderr, "exists") {
		t.Errorf("second add: exit %d, stderr %q; want 1 and 'exists'", code, stderr)
	}
	if !slices.Contains(ipNetnsList(t), name) {
		t.Errorf("ip netns list does not show %s", name)
	}
	ls, _, code := nsnetCmd(t, nsnet, nil, "netns", "ls")
	lsNames := strings.Fields(ls)
	if code != 0 || !slices.Contains(lsNames, name) || !slices.Contains(lsNames, ipMade.Name()) {
		t.Errorf("nsnet netns ls (exit %d) = %q, want %s and %s in it", code, ls, name, ipMade.Name())
	}
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "-o", "link").Output(); err != nil || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), "lo:") {
		t.Errorf("ip netns exec in nsnet's netns: %v: %s", err, out)
	}

	// exec enters exactly the namespace named, in either registry.
	for _, ns := range []string{name, ipMade.Name()} {
		want, err := exec.Command("ip", "netns", "exec", ns, "readlink", "/proc/self/ns/net").Output()
		if err != nil {
			t.Fatal(err)
		}
		got, stderr, code := nsnetCmd(t, nsnet, nil, "netns", "exec", ns, "--", "readlink", "/proc/self/ns/net")
		if code != 0 || got != string(want) {
			t.Errorf("nsnet netns exec %s readlink: exit %d, %q (%s), want %q", ns, code, got, stderr, want)
		}
		self, _ := os.Readlink("/proc/self/ns/mnt")
		gotMnt, _, _ := nsnetCmd(t, nsnet, nil, "netns", "exec", ns, "readlink", "/proc/self/ns/mnt")
		if strings.TrimSpace(gotMnt) == self {
			t.Errorf("nsnet netns exec %s ran in the caller's mount namespace", ns)
		}
	}
	if _, _, code := nsnetCmd(t, nsnet, nil, "netns", "exec", name, "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exit code %d, want the command's 7", code)
	}
	if got, _, code := nsnetCmd(t, nsnet, nil, "netns", "exec", name, "ls", "-d", "/"); code != 0 || got != "/\n" {
		t.Errorf("flags after the command: exit %d, %q", code, got)
	}
	if _, stderr, code := nsnetCmd(t, nsnet, nil, "netns", "exec", name, "--", "nsnt-no-such-command"); code == 0 || !strings.Contains(stderr, "nsnt-no-such-command") {
		t.Errorf("missing command: exit %d, %q", code, stderr)
	}
	if _, _, code := nsnetCmd(t, nsnet, nil, "netns", "exec", name+"-missing", "--", "true"); code == 0 {
		t.Error("exec in a missing netns succeeded")
	}

	// Every file of the per-netns dir is bound over /etc; a missing target is only a warning.
	conf := t.TempDir()
	if err := os.MkdirAll(filepath.Join(conf, name), 0o755); err != nil {
		t.Fatal(err)
	}
	for f, content := range map[string]string{"resolv.conf": "nameserver 10.154.0.53\n", "hosts": "10.154.0.9 nsnt-host\n", "nsnt-no-such-etc-file": "x\n"} {
		if err := os.WriteFile(filepath.Join(conf, name, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"NSNET_NETNS_CONF_DIR=" + conf}
	got, stderr, code := nsnetCmd(t, nsnet, env, "netns", "exec", name, "--", "cat", "/etc/resolv.conf", "/etc/hosts")
	if code != 0 || got != "nameserver 10.154.0.53\n10.154.0.9 nsnt-host\n" {
		t.Errorf("per-netns files: exit %d, %q", code, got)
	}
	if !strings.Contains(stderr, "nsnt-no-such-etc-file") {
		t.Errorf("no warning about the missing /etc target: %q", stderr)
	}
	if readString(t, "/etc/resolv.conf") == "nameserver 10.154.0.53\n" {
		t.Error("the host's /etc/resolv.conf changed")
	}
	assertNoMountsOf(t, conf)

	if _, stderr, code := nsnetCmd(t, nsnet, nil, "netns", "del", name); code != 0 {
		t.Fatalf("nsnet netns del: exit %d: %s", code, stderr)
	}
	if slices.Contains(ipNetnsList(t), name) {
		t.Errorf("ip netns list still shows %s", name)
	}
	if _, _, code := nsnetCmd(t, nsnet, nil, "netns", "del", name); code != 1 {
		t.Errorf("second del: exit %d, want 1", code)
	}
	assertNoMountsOf(t, name)
}

// with returns a copy of m with k set to v.
func with(m map[string]any, k string, v any) map[string]any {
	out := maps.Clone(m)
	out[k] = v
	return out
}
