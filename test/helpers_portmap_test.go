package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// pmBackends are the values of portmap-lite's "backend" key. The network's masquerade uses the
// same backend, so a subtest exercises one firewall implementation end to end.
var pmBackends = []string{"nftables", "iptables"}

// The IPv6 uplink the dual-stack tests add to the sandbox host and its outside world (the
// harness wires IPv4 only).
const (
	hostUplinkIP6 = "fd00:97::1"
	extUplinkIP6  = "fd00:97::2"
)

// pmNet is a chain of an interface plugin (bridge-lite, or the reference bridge with
// host-local) and portmap-lite, with every state and IPAM dir in the test's temp dir.
type pmNet struct {
	name       string
	bridge     string
	backend    string
	ipamRanges string // host-local keys, e.g. `"subnet": "10.220.0.0/24"`
	reference  bool   // the reference bridge instead of bridge-lite
	dataDir    string // host-local
	stateDir   string // bridge-lite
	pmStateDir string // portmap-lite
	cniPath    string
}

func newPMNet(t *testing.T, bins *harness.Binaries, name, bridge, backend, ipamRanges string) *pmNet {
	t.Helper()
	if len(bridge) > 15 || !strings.HasPrefix(bridge, "pm") {
		t.Fatalf("bridge name %q: want a name of at most 15 bytes starting with pm", bridge)
	}
	bins.Require(t, "bridge-lite")
	bins.Require(t, "portmap-lite")
	tmp := t.TempDir()
	return &pmNet{
		name:       name,
		bridge:     bridge,
		backend:    backend,
		ipamRanges: ipamRanges,
		dataDir:    filepath.Join(tmp, "ipam"),
		stateDir:   filepath.Join(tmp, "bridge-state"),
		pmStateDir: filepath.Join(tmp, "portmap-state"),
		cniPath:    bins.CNIPath,
	}
}

func (n *pmNet) interfacePlugin() string {
	if n.reference {
		return fmt.Sprintf(`{"type": "bridge", "bridge": %q, "isGateway": true, "isDefaultGateway": true,
			"ipMasq": true, "ipMasqBackend": %q, "hairpinMode": true,
			"ipam": {"type": "host-local", "dataDir": %q, %s}}`,
			n.bridge, n.backend, n.dataDir, n.ipamRanges)
	}
	return fmt.Sprintf(`{"type": "bridge-lite", "bridge": %q, "isGateway": true, "isDefaultGateway": true,
		"ipMasq": true, "ipMasqBackend": %q, "hairpinMode": true, "stateDir": %q,
		"ipam": {"type": "host-local", "dataDir": %q, %s}}`,
		n.bridge, n.backend, n.stateDir, n.dataDir, n.ipamRanges)
}

func (n *pmNet) portmapPlugin() string {
	return fmt.Sprintf(`{"type": "portmap-lite", "capabilities": {"portMappings": true}, "backend": %q, "stateDir": %q}`,
		n.backend, n.pmStateDir)
}

func (n *pmNet) conflist() string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [%s,
		%s]}`, n.name, n.interfacePlugin(), n.portmapPlugin())
}

// portmapConf is the stdin of a direct portmap-lite call: the bare minimum (name, type,
// stateDir) plus extra top-level keys.
func (n *pmNet) portmapConf(t testing.TB, version string, extra map[string]any) []byte {
	t.Helper()
	conf := map[string]any{"cniVersion": version, "name": n.name, "type": "portmap-lite", "stateDir": n.pmStateDir}
	for k, v := range extra {
		conf[k] = v
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatalf("encoding portmap-lite config: %v", err)
	}
	return b
}

// leftoverOptions allows the bridge to stay and points at every state and IPAM dir of the chain.
func (n *pmNet) leftoverOptions(containers ...*harness.NetNS) harness.LeftoverOptions {
	return harness.LeftoverOptions{
		AllowLinks:   []string{n.bridge},
		IPAMDataDirs: []string{n.dataDir},
		StateDirs:    []string{n.stateDir, n.pmStateDir},
		Containers:   containers,
	}
}

// portMapping is one runtimeConfig.portMappings entry as a runtime sends it.
type portMapping struct {
	HostPort      int
	ContainerPort int
	Protocol      string
	HostIP        string
}

func (m portMapping) capability() map[string]any {
	c := map[string]any{"hostPort": m.HostPort, "containerPort": m.ContainerPort, "protocol": m.Protocol}
	if m.HostIP != "" {
		c["hostIP"] = m.HostIP
	}
	return c
}

func tcpMap(host, ctr int) portMapping {
	return portMapping{HostPort: host, ContainerPort: ctr, Protocol: "tcp"}
}
func udpMap(host, ctr int) portMapping {
	return portMapping{HostPort: host, ContainerPort: ctr, Protocol: "udp"}
}

// pmEnv is one test's sandbox host with a portmap chain and a libcni runtime driving it.
type pmEnv struct {
	host *harness.Host
	net  *pmNet
	rt   *harness.Runtime
	list *libcni.NetworkConfigList
}

// newPMEnv makes a sandbox host and a chain on subnet 10.x.0.0/24 (and fd00:x::/64 when
// dualStack) with a bridge named bridge.
func newPMEnv(t *testing.T, name, bridge, backend string, x int, dualStack bool) *pmEnv {
	t.Helper()
	harness.RequireRoot(t)
	bins := harness.Build(t)
	ranges := fmt.Sprintf(`"subnet": "10.%d.0.0/24"`, x)
	if dualStack {
		ranges = fmt.Sprintf(`"ranges": [[{"subnet": "10.%d.0.0/24"}], [{"subnet": "fd00:%d::/64"}]]`, x, x)
	}
	n := newPMNet(t, bins, name, bridge, backend, ranges)
	return newPMEnvFor(t, bins, n)
}

func newPMEnvFor(t *testing.T, bins *harness.Binaries, n *pmNet) *pmEnv {
	t.Helper()
	host := harness.NewHost(t)
	return &pmEnv{
		host: host,
		net:  n,
		rt:   harness.NewRuntime(t, host.NetNS, bins.CNIPath),
		list: harness.ConfList(t, n.conflist()),
	}
}

// pmContainer is a container attached through the chain.
type pmContainer struct {
	ns       *harness.NetNS
	att      *libcni.RuntimeConf
	ip4, ip6 string
}

// attachment is the runtime's view of attaching c as id with mappings ms.
func attachment(c *harness.NetNS, id string, ms []portMapping) *libcni.RuntimeConf {
	att := harness.Attachment(c, id, "eth0")
	caps := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		caps = append(caps, m.capability())
	}
	att.CapabilityArgs = map[string]any{"portMappings": caps}
	return att
}

// attach ADDs c through the chain; the attachment is DELeted when the test ends.
func (e *pmEnv) attach(t testing.TB, c *harness.NetNS, id string, ms ...portMapping) (*pmContainer, error) {
	att := attachment(c, id, ms)
	t.Cleanup(func() { _ = e.rt.Del(e.list, att) })
	raw, err := e.rt.Add(e.list, att)
	if err != nil {
		return nil, fmt.Errorf("ADD %s through the chain: %w", id, err)
	}
	res, err := types100.NewResultFromResult(raw)
	if err != nil {
		return nil, fmt.Errorf("converting the ADD result of %s: %w", id, err)
	}
	pc := &pmContainer{ns: c, att: att}
	v4, v6 := resultAddrs(res)
	if len(v4) > 0 {
		pc.ip4 = v4[0]
	}
	if len(v6) > 0 {
		pc.ip6 = v6[0]
	}
	return pc, nil
}

// mustAttach is attach in a new container, failing the test on error.
func (e *pmEnv) mustAttach(t testing.TB, id string, ms ...portMapping) *pmContainer {
	t.Helper()
	pc, err := e.attach(t, e.host.NewContainer(t), id, ms...)
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

func (e *pmEnv) del(pc *pmContainer) error {
	if err := e.rt.Del(e.list, pc.att); err != nil {
		return fmt.Errorf("DEL %s through the chain: %w", pc.att.ContainerID, err)
	}
	return nil
}

// execPortmap runs portmap-lite directly from the host netns, as a runtime there would.
func (e *pmEnv) execPortmap(t testing.TB, command, id, netnsPath string, conf []byte) *harness.PluginOutput {
	t.Helper()
	ifName := "eth0"
	if command == "GC" || command == "STATUS" {
		ifName = ""
	}
	out, err := harness.ExecPlugin(e.host.NetNS, "portmap-lite", harness.Invocation{
		Command: command, ContainerID: id, NetNS: netnsPath, IfName: ifName, Path: e.net.cniPath, Config: conf,
	})
	if err != nil {
		t.Fatalf("running portmap-lite %s: %v", command, err)
	}
	return out
}

// records lists the attachment records in portmap-lite's state dir, as "containerID:ifName".
func (e *pmEnv) records(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, f := range dirFiles(t, e.net.pmStateDir, func(name string) bool { return name == "lock" }) {
		out = append(out, strings.TrimSuffix(filepath.Base(f), ".json"))
	}
	return out
}

func (e *pmEnv) assertNoLeftovers(t testing.TB, containers ...*harness.NetNS) {
	t.Helper()
	harness.AssertNoLeftovers(t, e.host, e.net.leftoverOptions(containers...))
}

// published returns what the backend publishes, per family: the nftables maps (and for v4 the
// hairpin set) or the iptables and ip6tables nat chain NSNET-HOSTPORTS. Missing objects read as
// empty.
func (e *pmEnv) published(t testing.TB) (v4, v6 string) {
	t.Helper()
	if e.net.backend == "nftables" {
		dump := func(maps ...string) string {
			var b strings.Builder
			for _, m := range maps {
				out, err := e.host.Exec(t, "nft", "list", "map", "inet", "nsnet-portmap", m)
				if err == nil {
					b.Write(out)
				}
			}
			return b.String()
		}
		return dump("pm4", "pm4ip"), dump("pm6", "pm6ip")
	}
	chain := func(cmd string) string {
		out, err := e.host.Exec(t, cmd, "-t", "nat", "-S", "NSNET-HOSTPORTS")
		if err != nil {
			return ""
		}
		return string(out)
	}
	return chain("iptables"), chain("ip6tables")
}

// publishesPort reports whether a dump from published holds host port p.
func publishesPort(dump string, p int) bool {
	return regexp.MustCompile(`(\. |--dport )` + strconv.Itoa(p) + `\b`).MatchString(dump)
}

// portmapTable returns `nft list table inet nsnet-portmap`, or "" when the table does not exist.
func (e *pmEnv) portmapTable(t testing.TB) string {
	t.Helper()
	out, err := e.host.Exec(t, "nft", "list", "table", "inet", "nsnet-portmap")
	if err != nil {
		return ""
	}
	return string(out)
}

// portmapDump returns everything the backend holds for published ports: the nftables table, or
// the iptables and ip6tables nat chains NSNET-HOSTPORTS and NSNET-HOSTPORTS-MASQ (DNAT and
// hairpin rules).
func (e *pmEnv) portmapDump(t testing.TB) string {
	t.Helper()
	if e.net.backend == "nftables" {
		return e.portmapTable(t)
	}
	var b strings.Builder
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"NSNET-HOSTPORTS", "NSNET-HOSTPORTS-MASQ"} {
			if out, err := e.host.Exec(t, cmd, "-t", "nat", "-S", chain); err == nil {
				b.Write(out)
			}
		}
	}
	return b.String()
}

// hostPort is the host's uplink address with port p.
func hostPort(p int) string { return net.JoinHostPort(harness.HostUplinkIP, strconv.Itoa(p)) }

// assertWhoami asks the whoami server behind addr from a client netns and checks the source
// address the server saw.
func assertWhoami(t testing.TB, what string, from *harness.NetNS, network, addr, want string) {
	t.Helper()
	seen, err := harness.AskWhoami(from, network, addr)
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if seen != want {
		t.Errorf("%s: the server saw the client as %s, want %s", what, seen, want)
	}
}

// assertRefused checks that a TCP connection from a client netns to addr fails: nothing
// publishes the port, so the host itself refuses it.
func assertRefused(t testing.TB, what string, from *harness.NetNS, network, addr string) {
	t.Helper()
	if seen, err := harness.AskWhoami(from, network, addr); err == nil {
		t.Errorf("%s: reached a server that saw %s, want no connection", what, seen)
	}
}

// addUplinkIPv6 gives the sandbox host's uplink IPv6 addresses (no DAD, usable at once) and
// the host an IPv6 default route towards its outside world.
func addUplinkIPv6(t testing.TB, host *harness.Host) {
	t.Helper()
	steps := []struct {
		in   *harness.NetNS
		args []string
	}{
		{host.NetNS, []string{"ip", "-6", "addr", "add", hostUplinkIP6 + "/64", "dev", harness.UplinkName, "nodad"}},
		{host.Ext, []string{"ip", "-6", "addr", "add", extUplinkIP6 + "/64", "dev", harness.UplinkPeer, "nodad"}},
		{host.NetNS, []string{"ip", "-6", "route", "add", "default", "via", extUplinkIP6, "dev", harness.UplinkName}},
	}
	for _, s := range steps {
		if _, err := s.in.Exec(t, s.args...); err != nil {
			t.Fatalf("IPv6 uplink: %v", err)
		}
	}
}

// udpSink is a UDP whoami server that also remembers the source of every datagram, so a test
// can tell which container a flow reached. It answers each datagram with the source address
// it saw, like harness.StartWhoami, which it replaces for UDP: socat's UDP4-RECVFROM fork
// children keep the shared socket open for about half a second after answering and swallow
// datagrams from other peers that arrive meanwhile, so back-to-back probes from different
// clients time out at random.
type udpSink struct {
	conn *net.UDPConn
	done chan struct{}

	mu   sync.Mutex
	seen []string // "ip:port" of each datagram, in arrival order
}

// startUDPSink listens on UDP port on every IPv4 address of in (the socket may be bound
// before the container has an interface) until the test ends.
func startUDPSink(t testing.TB, in *harness.NetNS, port int) *udpSink {
	t.Helper()
	s := &udpSink{done: make(chan struct{})}
	err := in.Do(func() (err error) {
		s.conn, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		t.Fatalf("UDP sink on port %d in %s: %v", port, in.Name(), err)
	}
	go func() {
		defer close(s.done)
		buf := make([]byte, 1500)
		for {
			_, from, err := s.conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.seen = append(s.seen, from.String())
			s.mu.Unlock()
			_, _ = s.conn.WriteToUDP([]byte(from.IP.String()+"\n"), from)
		}
	}()
	t.Cleanup(func() {
		s.conn.Close()
		<-s.done
	})
	return s
}

// count is how many datagrams arrived, from anywhere.
func (s *udpSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// countFrom is how many datagrams arrived from source addr ("ip:port").
func (s *udpSink) countFrom(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.seen {
		if a == addr {
			n++
		}
	}
	return n
}

// sources lists the distinct sources seen so far.
func (s *udpSink) sources() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.seen)
	slices.Sort(out)
	return slices.Compact(out)
}

// waitFrom waits until a datagram from addr arrived, returning how long that took.
func (s *udpSink) waitFrom(addr string, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < timeout {
		if s.countFrom(addr) > 0 {
			return time.Since(start), true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), false
}

// udpSender sends a datagram from a fixed local address to remote at a fixed interval, the way
// a DNS or syslog client keeps one UDP "flow" alive, until stopped.
type udpSender struct {
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func startUDPSender(t testing.TB, in *harness.NetNS, local, remote string, every time.Duration) *udpSender {
	t.Helper()
	conn := listenUDPIn(t, in, local)
	dst, err := net.ResolveUDPAddr("udp4", remote)
	if err != nil {
		t.Fatalf("resolving %s: %v", remote, err)
	}
	s := &udpSender{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer conn.Close()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			// Unconnected: an ICMP error while nothing publishes the port must not end the flow.
			_, _ = conn.WriteToUDP([]byte(strconv.Itoa(seq)), dst)
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(s.Stop)
	return s
}

// Stop ends the flow; it is safe to call more than once.
func (s *udpSender) Stop() {
	s.once.Do(func() { close(s.stop) })
	<-s.done
}

// listenUDPIn opens a UDP socket bound to local inside netns in.
func listenUDPIn(t testing.TB, in *harness.NetNS, local string) *net.UDPConn {
	t.Helper()
	laddr, err := net.ResolveUDPAddr("udp4", local)
	if err != nil {
		t.Fatalf("resolving %s: %v", local, err)
	}
	var conn *net.UDPConn
	if err := in.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", laddr)
		return err
	}); err != nil {
		t.Fatalf("binding UDP %s in %s: %v", local, in.Name(), err)
	}
	return conn
}

// sendUDP sends n datagrams from local to remote inside netns in.
func sendUDP(t testing.TB, in *harness.NetNS, local, remote string, n int) {
	t.Helper()
	conn := listenUDPIn(t, in, local)
	defer conn.Close()
	dst, err := net.ResolveUDPAddr("udp4", remote)
	if err != nil {
		t.Fatalf("resolving %s: %v", remote, err)
	}
	for i := range n {
		if _, err := conn.WriteToUDP([]byte(strconv.Itoa(i)), dst); err != nil {
			t.Fatalf("sending UDP from %s to %s in %s: %v", local, remote, in.Name(), err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The packet count of a rule: its counter in nft output, the first column of
// `iptables -L -v -x`.
var (
	nftPacketsRE = regexp.MustCompile(`counter packets (\d+)`)
	iptPacketsRE = regexp.MustCompile(`^\s*(\d+)\s`)
)

// martianDrops returns the packet counter of the rule that drops IPv4 packets with a loopback
// source arriving from outside: the nft rule in chain martian, or the iptables raw rule in
// NSNET-MARTIAN.
func (e *pmEnv) martianDrops(t testing.TB) int {
	t.Helper()
	var out []byte
	var err error
	var re *regexp.Regexp
	var marker string
	if e.net.backend == "nftables" {
		out, err = e.host.Exec(t, "nft", "list", "chain", "inet", "nsnet-portmap", "martian")
		re, marker = nftPacketsRE, "martian4-saddr"
	} else {
		out, err = e.host.Exec(t, "iptables", "-t", "raw", "-L", "NSNET-MARTIAN", "-v", "-n", "-x")
		re, marker = iptPacketsRE, "martian saddr"
	}
	if err != nil {
		t.Fatalf("reading the martian counter: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, marker) {
			continue
		}
		m := re.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("martian rule without a packet counter: %q", l)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	t.Fatalf("no martian rule %q in:\n%s", marker, out)
	return 0
}

// mentionsIPv4 reports whether text mentions the IPv4 address ip on its own, "ip:port" included
// (containsAddr treats a colon as part of an IPv6 address).
func mentionsIPv4(text, ip string) bool {
	return regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `([^0-9.]|\.[^0-9]|\.?$)`).MatchString(text)
}

// errorMentions checks that err names every one of words.
func errorMentions(err error, words ...string) error {
	if err == nil {
		return errors.New("no error")
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			return fmt.Errorf("error %q does not mention %q", err, w)
		}
	}
	return nil
}
