package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// netRunEnv runs nsnet inside a sandbox host with a conflist of its own
// named like the default network, so the embedded one is not used.
type netRunEnv struct {
	*nsnetEnv
	host     *harness.Host
	dirs     string // plugin state and IPAM of the conflist
	netFlags []string
}

const (
	netRunBridge = "nsntrun0"
	netRunSubnet = "10.211.0."
)

func newNetRunEnv(t *testing.T) *netRunEnv {
	t.Helper()
	harness.RequireRoot(t)
	bins := harness.Build(t)
	bins.Require(t, "bridge-lite")
	bins.Require(t, "portmap-lite")
	// Made before the nsnet env, so its cleanup (rm -f in the host) runs
	// while they still exist.
	host := harness.NewHost(t)
	confDir, cniRoot, dirs := t.TempDir(), t.TempDir(), t.TempDir()
	conflist := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "bridge-lite", "plugins": [
		{"type": "bridge-lite", "bridge": %q, "isGateway": true, "isDefaultGateway": true, "ipMasq": true,
		 "hairpinMode": true, "stateDir": %q,
		 "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.211.0.0/24"}]]}},
		{"type": "portmap-lite", "capabilities": {"portMappings": true}, "stateDir": %q}]}`,
		netRunBridge, filepath.Join(dirs, "bridge"), filepath.Join(dirs, "ipam"), filepath.Join(dirs, "portmap"))
	if err := os.WriteFile(filepath.Join(confDir, "10-bridge-lite.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newNsnetEnv(t)
	e.in = host.Do
	e.env = []string{"NSNET_CNI_ROOT=" + cniRoot}
	return &netRunEnv{
		nsnetEnv: e,
		host:     host,
		dirs:     dirs,
		netFlags: []string{"--net", "bridge-lite", "--cni-conf-dir", confDir, "--cni-bin-dir", bins.ProjectDir},
	}
}

// detachNet starts a container on the network with run -d; it is removed
// (inside the host) at the end of the test.
func (e *netRunEnv) detachNet(flags ...string) string {
	e.t.Helper()
	args := append(append([]string{"run", "-d", "--rootfs", e.rootfs}, e.netFlags...), flags...)
	r := e.run(args...)
	e.mustSucceed(r)
	id := strings.TrimSpace(r.stdout)
	e.t.Cleanup(func() { e.run("rm", "-f", id) })
	return id
}

// netState is the network part of nsnet inspect.
type netState struct {
	Network *struct {
		IPs      []string `json:"ips"`
		MAC      string   `json:"mac"`
		Gateways []string `json:"gateways"`
		Ports    []struct {
			HostPort      int    `json:"hostPort"`
			ContainerPort int    `json:"containerPort"`
			Protocol      string `json:"protocol"`
		} `json:"ports"`
	} `json:"network"`
}

// address returns the container's address on the network, checking what
// inspect shows of it.
func (e *netRunEnv) address(id string) string {
	e.t.Helper()
	r := e.run("inspect", id)
	e.mustSucceed(r)
	var st netState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		e.t.Fatal(err)
	}
	nw := st.Network
	if nw == nil || len(nw.IPs) != 1 || !strings.HasPrefix(nw.IPs[0], netRunSubnet) || len(nw.MAC) != 17 ||
		len(nw.Gateways) != 1 || nw.Gateways[0] != netRunSubnet+"1" {
		e.t.Fatalf("inspect shows no address, MAC and gateway on %s0/24:\n%s", netRunSubnet, r.stdout)
	}
	ip, _, _ := strings.Cut(nw.IPs[0], "/")
	return ip
}

// assertNoNetLeftovers checks the host for everything the network and the
// containers' netns pins could leave, and the state root for containers.
func (e *netRunEnv) assertNoNetLeftovers() {
	e.t.Helper()
	e.assertNoAttachments(harness.LeftoverOptions{
		AllowLinks:   []string{netRunBridge},
		IPAMDataDirs: []string{filepath.Join(e.dirs, "ipam")},
		StateDirs:    []string{filepath.Join(e.dirs, "bridge"), filepath.Join(e.dirs, "portmap")},
	})
	if entries, _ := os.ReadDir(e.state); len(entries) > 0 {
		e.t.Errorf("state left: %v", entries)
	}
}

// assertNoAttachments checks the host for what an attachment leaves (see
// opts) and for netns pins still mounted under the state root.
func (e *netRunEnv) assertNoAttachments(opts harness.LeftoverOptions) {
	e.t.Helper()
	harness.AssertNoLeftovers(e.t, e.host, opts)
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		e.t.Fatal(err)
	}
	if strings.Contains(string(mounts), e.state) {
		e.t.Errorf("a mount under the state root %s is left:\n%s", e.state, mounts)
	}
}

// extGet fetches http://addr/ from the ext netns, retrying while the
// server starts.
func extGet(t *testing.T, host *harness.Host, addr string) string {
	t.Helper()
	return httpGet(t, host.Ext, addr)
}

// httpGet fetches http://addr/ from the netns ns, retrying while the
// server starts.
func httpGet(t *testing.T, ns *harness.NetNS, addr string) string {
	t.Helper()
	var body []byte
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var conn net.Conn
		// The socket belongs to the netns it was made in.
		if err = ns.Do(func() (err error) { conn, err = net.DialTimeout("tcp4", addr, 2*time.Second); return err }); err != nil {
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err == nil {
			body, err = io.ReadAll(conn)
		}
		conn.Close()
		if err == nil {
			if _, b, ok := strings.Cut(string(body), "\r\n\r\n"); ok {
				return b
			}
			err = fmt.Errorf("no HTTP response: %q", body)
		}
	}
	t.Errorf("GET http://%s/ from %s: %v", addr, ns.Name(), err)
	return ""
}

func TestRunNetPublishAndReach(t *testing.T) {
	e := newNetRunEnv(t)
	if err := os.MkdirAll(filepath.Join(e.rootfs, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "www", "index.html"), []byte("hello from nsnet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	web := e.detachNet("--name", "nsnt-web", "--hostname", "web", "-p", "8080:80",
		"--dns", "192.0.2.53", "--dns-search", "nsnt.test", "--add-host", "db.test:10.1.2.3",
		"--", "httpd", "-f", "-p", "80", "-h", "/www")
	webIP := e.address(web)
	if got := extGet(t, e.host, harness.HostUplinkIP+":8080"); got != "hello from nsnet\n" {
		t.Errorf("ext → published 8080 got %q", got)
	}
	r := e.run("ps")
	e.mustSucceed(r)
	if !strings.Contains(r.stdout, webIP) || !strings.Contains(r.stdout, "0.0.0.0:8080->80/tcp") {
		t.Errorf("ps lacks the address %s or the port:\n%s", webIP, r.stdout)
	}

	r = e.run("exec", web, "--", "sh", "-c", "cat /etc/hosts; echo ---; cat /etc/resolv.conf")
	e.mustSucceed(r)
	hosts, resolv, _ := strings.Cut(r.stdout, "---\n")
	for _, want := range []string{"127.0.0.1\tlocalhost\n", webIP + "\tweb\n", "10.1.2.3\tdb.test\n"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("/etc/hosts lacks %q:\n%s", want, hosts)
		}
	}
	if strings.Contains(hosts, "127.0.1.1") {
		t.Errorf("/etc/hosts still names the host on 127.0.1.1:\n%s", hosts)
	}
	for _, want := range []string{"nameserver 192.0.2.53\n", "search nsnt.test\n"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("/etc/resolv.conf lacks %q:\n%s", want, resolv)
		}
	}

	// Container → ext (masqueraded) and container → container.
	if r := e.run("exec", web, "--", "ping", "-c", "1", "-W", "2", harness.ExtUplinkIP); r.code != 0 {
		t.Errorf("container → ext: %s", r)
	}
	other := e.detachNet("--", "sleep", "60")
	otherIP := e.address(other)
	if otherIP == webIP {
		t.Errorf("both containers got %s", webIP)
	}
	if r := e.run("exec", other, "--", "ping", "-c", "1", "-W", "2", webIP); r.code != 0 {
		t.Errorf("container → container: %s", r)
	}
	r = e.run("exec", other, "--", "cat", "/etc/resolv.conf")
	e.mustSucceed(r)
	if !strings.HasPrefix(r.stdout, "# Generated by nsnet") || strings.Contains(r.stdout, "nameserver 127.") {
		t.Errorf("/etc/resolv.conf without --dns:\n%s", r.stdout)
	}

	// The same host port again: the ADD fails, the start with it, and
	// nothing of that container stays.
	args := append(append([]string{"run", "-d", "--name", "nsnt-clash", "--rootfs", e.rootfs}, e.netFlags...),
		"-p", "8080:80", "--", "sleep", "60")
	r = e.run(args...)
	if r.code != 125 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "portmap-lite") {
		t.Errorf("second container publishing 8080: %s; want exit 125 and one line naming portmap-lite", r)
	}
	if r := e.run("inspect", "nsnt-clash"); r.code == 0 {
		t.Errorf("the failed container is recorded:\n%s", r.stdout)
	}
	if got := extGet(t, e.host, harness.HostUplinkIP+":8080"); got != "hello from nsnet\n" {
		t.Errorf("the failed start broke the first container's port: got %q", got)
	}

	e.mustSucceed(e.run("rm", "-f", web, other))
	e.assertNoNetLeftovers()
}

func TestRunNetForegroundAndKilled(t *testing.T) {
	e := newNetRunEnv(t)
	args := append(append([]string{"run", "--rm", "--rootfs", e.rootfs}, e.netFlags...), "-p", "8081:80",
		"--", "sh", "-c", "ip -4 addr show eth0 | grep -c 'inet "+netRunSubnet+"'; ip route | grep -c '^default via '")
	r := e.run(args...)
	e.mustSucceed(r)
	if r.stdout != "1\n1\n" {
		t.Errorf("in the container: %q, want an address on the network and a default route", r.stdout)
	}
	e.assertNoNetLeftovers()

	// nsnet killed: its container dies with it, and rm deletes the
	// attachment it recorded.
	cmd := e.command(t.Context(), append(append([]string{"run", "--name", "nsnt-killed", "--rootfs", e.rootfs}, e.netFlags...),
		"-p", "8081:80", "--", "sleep", "60")...)
	if err := e.host.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); e.run("inspect", "nsnt-killed").code != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nsnet run recorded no container nsnt-killed")
		}
	}
	e.waitStatus("nsnt-killed", "running")
	e.address("nsnt-killed")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	e.waitStatus("nsnt-killed", "stopped")
	e.mustSucceed(e.run("rm", "nsnt-killed"))
	e.assertNoNetLeftovers()
}

func TestRunNetPublishFromHost(t *testing.T) {
	e := newNetRunEnv(t)
	if err := os.MkdirAll(filepath.Join(e.rootfs, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "www", "index.html"), []byte("published\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	web := e.detachNet("-p", "8080:80", "--", "httpd", "-f", "-p", "80", "-h", "/www")
	e.address(web)
	for _, addr := range []string{harness.HostUplinkIP, "127.0.0.1"} {
		if got := httpGet(t, e.host.NetNS, addr+":8080"); got != "published\n" {
			t.Errorf("host → %s:8080 got %q", addr, got)
		}
	}
	if got := extGet(t, e.host, harness.HostUplinkIP+":8080"); got != "published\n" {
		t.Errorf("ext → %s:8080 got %q", harness.HostUplinkIP, got)
	}
	e.mustSucceed(e.run("rm", "-f", web))
	e.assertNoNetLeftovers()
}

func TestRunNetEmbeddedDefault(t *testing.T) {
	harness.RequireRoot(t)
	bins := harness.Build(t)
	bins.Require(t, "bridge-lite")
	bins.Require(t, "portmap-lite")
	host := harness.NewHost(t)
	// No file in the conf dir defines bridge-lite: the built-in network
	// is used, with its state under the CNI state root.
	confDir, cniRoot := t.TempDir(), t.TempDir()
	e := newNsnetEnv(t)
	e.in = host.Do
	r := e.sh("ip -4 -o addr show eth0; ip route; ping -c 1 -W 2 "+harness.ExtUplinkIP+" >/dev/null && echo ext reached",
		"--net", "bridge-lite", "-p", "8080:80", "--cni-conf-dir", confDir, "--cni-bin-dir", bins.ProjectDir,
		"--cni-state-root", cniRoot)
	e.mustSucceed(r)
	var gw string
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "default" && f[1] == "via" {
			gw = f[2]
		}
	}
	if !strings.Contains(r.stdout, "inet 10.") || gw == "" || !strings.Contains(r.stdout, "ext reached\n") {
		t.Fatalf("in the container: want an address, a default route and ext reached:\n%s", r.stdout)
	}
	// The gateway is the built-in bridge's address, on a subnet apart
	// from the host's uplink.
	out, err := host.Exec(t, "ip", "-4", "-o", "addr", "show", "dev", "nsnet0")
	if err != nil || !strings.Contains(string(out), "inet "+gw+"/") {
		t.Errorf("bridge nsnet0 lacks the gateway %s: %s %v", gw, out, err)
	}
	if strings.HasPrefix(gw, "10.97.0.") {
		t.Errorf("the built-in network's gateway %s is on the host's uplink subnet", gw)
	}
	harness.AssertNoLeftovers(t, host, harness.LeftoverOptions{
		AllowLinks:   []string{"nsnet0"},
		IPAMDataDirs: []string{filepath.Join(cniRoot, "ipam")},
		StateDirs:    []string{filepath.Join(cniRoot, "bridge-lite"), filepath.Join(cniRoot, "portmap-lite")},
	})
	_ = filepath.WalkDir(filepath.Join(cniRoot, "cache"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("CNI result cache left: %s", path)
		}
		return nil
	})
}

func TestRunNetGCAfterKill(t *testing.T) {
	e := newNetRunEnv(t)
	removed := e.detachNet("--rm", "-p", "8084:80", "--", "sleep", "60")
	kept := e.detachNet("--", "sleep", "60")
	for _, id := range []string{removed, kept} {
		e.address(id)
		st := e.inspect(id)
		if st.Monitor <= 0 {
			t.Fatalf("container %s records no monitor", id)
		}
		// The monitor is the nsnet process that would DEL; its container
		// dies with it.
		if err := syscall.Kill(st.Monitor, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{removed, kept} {
		e.waitStatus(id, "stopped")
	}
	if e.address(kept) == "" {
		t.Fatal("the killed container lost its recorded attachment before gc")
	}

	r := e.run("gc")
	e.mustSucceed(r)
	for id, want := range map[string]string{
		removed: removed + "\t" + removed + "\tdetached from bridge-lite, removed\n",
		kept:    kept + "\t" + kept + "\tdetached from bridge-lite\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("gc output lacks %q for %s:\n%s", want, id, r.stdout)
		}
	}
	if r := e.run("inspect", removed); r.code == 0 {
		t.Errorf("the --rm container is still recorded:\n%s", r.stdout)
	}
	r = e.run("inspect", kept)
	e.mustSucceed(r)
	var st netState
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Network != nil {
		t.Errorf("the kept container still records an attachment:\n%s", r.stdout)
	}
	if r := e.run("gc"); r.code != 0 || r.stdout != "" {
		t.Errorf("a second gc: %s; want success and nothing done", r)
	}
	e.assertNoAttachments(harness.LeftoverOptions{
		AllowLinks:   []string{netRunBridge},
		IPAMDataDirs: []string{filepath.Join(e.dirs, "ipam")},
		StateDirs:    []string{filepath.Join(e.dirs, "bridge"), filepath.Join(e.dirs, "portmap")},
	})
	e.mustSucceed(e.run("rm", kept))
	e.assertNoNetLeftovers()
}

// TestRunNetForeignPluginsDelInNetns: a network with a plugin that needs
// the container's netns in DEL gets it there; the netns goes only after
// DEL. The reference bridge reads the container's addresses inside it to
// remove its masquerade rules, which would stay with an empty CNI_NETNS.
func TestRunNetForeignPluginsDelInNetns(t *testing.T) {
	harness.RequireRoot(t)
	ref, err := harness.ReferencePluginsDir()
	if err != nil {
		t.Fatalf("reference plugins: %v", err)
	}
	host := harness.NewHost(t)
	confDir, cniRoot, ipamDir := t.TempDir(), t.TempDir(), t.TempDir()
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "refnet", "plugins": [
		{"type": "bridge", "bridge": "nsntref0", "isGateway": true, "ipMasq": true,
		 "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.212.0.0/24"}]]}}]}`, ipamDir)
	if err := os.WriteFile(filepath.Join(confDir, "10-refnet.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newNsnetEnv(t)
	e.in = host.Do
	e.env = []string{"NSNET_CNI_ROOT=" + cniRoot}
	opts := harness.LeftoverOptions{AllowLinks: []string{"nsntref0"}, IPAMDataDirs: []string{ipamDir}}
	r := e.sh("ip -4 -o addr show eth0", "--net", "refnet", "--cni-conf-dir", confDir, "--cni-bin-dir", ref)
	e.mustSucceed(r)
	if !strings.Contains(r.stdout, "inet 10.212.0.") {
		t.Fatalf("no address from the reference bridge in the container:\n%s", r.stdout)
	}
	// The bridge now exists; what is left beyond it and the IPAM lock
	// would be the container's (its masquerade chain above all).
	harness.AssertNoLeftovers(t, host, opts)
}
