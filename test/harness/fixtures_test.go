package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// netnsNames lists the named namespaces, as `ip netns list` shows them.
func netnsNames(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func TestNetNSLifecycle(t *testing.T) {
	RequireRoot(t)
	var name, path string
	t.Run("create", func(t *testing.T) {
		n := NewNetNS(t, "life")
		name, path = n.Name(), n.Path()
		if !strings.HasPrefix(name, NamePrefix) || !strings.HasSuffix(name, "-life") {
			t.Errorf("name %q lacks prefix %q or label", name, NamePrefix)
		}
		if !slices.Contains(netnsNames(t), name) {
			t.Errorf("ip netns list does not show %s", name)
		}
		inside, err := n.Exec(t, "readlink", "/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		var viaDo string
		if err := n.Do(func() error {
			var err error
			viaDo, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		root, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(inside)); got != viaDo || got == root {
			t.Errorf("Exec sees %s, Do sees %s, test process %s: want Exec == Do != process", got, viaDo, root)
		}
	})
	if slices.Contains(netnsNames(t), name) {
		t.Errorf("netns %s still listed after cleanup", name)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still exists after cleanup (stat: %v)", path, err)
	}
}

func TestHostFixture(t *testing.T) {
	RequireRoot(t)
	var names []string
	t.Run("use", func(t *testing.T) {
		host := NewHost(t)
		c1, c2 := host.NewContainer(t), host.NewContainer(t)
		names = []string{host.Name(), host.Ext.Name(), c1.Name(), c2.Name()}
		listed := netnsNames(t)
		for _, n := range names {
			if !slices.Contains(listed, n) {
				t.Errorf("netns %s not listed", n)
			}
		}

		nl, closeNl, err := netlinkAt(host.NetNS)
		if err != nil {
			t.Fatal(err)
		}
		defer closeNl()
		up, err := nl.LinkByName(UplinkName)
		if err != nil {
			t.Fatal(err)
		}
		if up.Attrs().MTU != UplinkMTU || up.Attrs().OperState != netlink.OperUp {
			t.Errorf("%s: mtu %d state %s, want %d up", UplinkName, up.Attrs().MTU, up.Attrs().OperState, UplinkMTU)
		}
		routes, err := host.Exec(t, "ip", "-4", "route", "show", "default")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(routes), "via "+ExtUplinkIP+" dev "+UplinkName) {
			t.Errorf("default route: %q", routes)
		}
		if err := Ping(t, host.NetNS, ExtUplinkIP); err != nil {
			t.Error(err)
		}
		if err := Ping(t, host.Ext, HostUplinkIP); err != nil {
			t.Error(err)
		}
		if err := Ping(t, c1, "127.0.0.1"); err != nil {
			t.Errorf("lo in container: %v", err)
		}
		if err := Ping(t, c1, ExtUplinkIP); err == nil {
			t.Errorf("container without interfaces reached %s", ExtUplinkIP)
		}
		links, err := c2.Exec(t, "ip", "-o", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(strings.TrimSpace(string(links)), "\n") + 1; n != 1 || !strings.Contains(string(links), "lo:") {
			t.Errorf("new container should hold only lo, has:\n%s", links)
		}
	})
	listed := netnsNames(t)
	for _, n := range names {
		if slices.Contains(listed, n) {
			t.Errorf("netns %s still listed after cleanup", n)
		}
	}
}

func TestWhoami(t *testing.T) {
	RequireRoot(t)
	host := NewHost(t)
	for _, network := range []string{"tcp4", "udp4"} {
		t.Run(network+" across the uplink", func(t *testing.T) {
			StartWhoami(t, host.Ext, network, 8080)
			for range 2 { // the server forks per client, so it answers again
				got, err := AskWhoami(host.NetNS, network, ExtUplinkIP+":8080")
				if err != nil {
					t.Fatal(err)
				}
				if got != HostUplinkIP {
					t.Errorf("server saw %q, want %q", got, HostUplinkIP)
				}
			}
		})
	}
	t.Run("tcp6 on loopback", func(t *testing.T) {
		c := host.NewContainer(t)
		StartWhoami(t, c, "tcp6", 9090)
		got, err := AskWhoami(c, "tcp6", "[::1]:9090")
		if err != nil {
			t.Fatal(err)
		}
		if got != "::1" {
			t.Errorf("server saw %q, want ::1", got)
		}
	})
	t.Run("stopped server refuses", func(t *testing.T) {
		w := StartWhoami(t, host.Ext, "tcp4", 8081)
		if err := w.Stop(); err != nil {
			t.Fatal(err)
		}
		if got, err := AskWhoami(host.NetNS, "tcp4", ExtUplinkIP+":8081"); err == nil {
			t.Errorf("stopped server answered %q", got)
		}
	})
}

func TestLeftoverDetection(t *testing.T) {
	RequireRoot(t)
	host := NewHost(t)
	c := host.NewContainer(t)
	stateDir, ipamDir := t.TempDir(), t.TempDir()
	opts := LeftoverOptions{
		AllowLinks:   []string{"br9"},
		IPAMDataDirs: []string{ipamDir},
		StateDirs:    []string{stateDir, filepath.Join(t.TempDir(), "never-created")},
		Containers:   []*NetNS{c},
	}
	clean, err := FindLeftovers(host, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !clean.Empty() {
		t.Fatalf("fresh host has leftovers:\n%s", clean)
	}

	mustRun := func(n *NetNS, args ...string) {
		t.Helper()
		if _, err := n.Exec(t, args...); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(host.NetNS, "ip", "link", "add", "br9", "type", "bridge")
	mustRun(host.NetNS, "ip", "link", "add", "veth00aabbcc", "type", "veth", "peer", "name", "eth0", "netns", c.Name())
	mustRun(host.NetNS, "nft", "add table inet nsnet-masq; add chain inet nsnet-masq post { type nat hook postrouting priority srcnat; }; add rule inet nsnet-masq post ip saddr 10.88.0.2 masquerade")
	mustRun(host.NetNS, "iptables", "-t", "nat", "-N", "NSNET-TEST")
	mustRun(host.NetNS, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.88.0.2", "-j", "NSNET-TEST")
	files := map[string]string{
		filepath.Join(ipamDir, "net1", "lock"):               "",
		filepath.Join(ipamDir, "net1", "last_reserved_ip.0"): "10.88.0.2",
		filepath.Join(ipamDir, "net1", "10.88.0.2"):          "c1\neth0",
		filepath.Join(stateDir, "lock"):                      "",
		filepath.Join(stateDir, "net1", "c1-eth0"):           "{}",
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	got, err := FindLeftovers(host, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := &Snapshot{
		Links: []string{"veth00aabbcc (veth)"},
		Nft: []string{
			"table inet nsnet-masq",
			"table inet nsnet-masq chain post",
			"table inet nsnet-masq chain post: ip saddr 10.88.0.2 masquerade",
		},
		IPTables: []string{
			"ipv4 nat: :NSNET-TEST",
			"ipv4 nat: -A POSTROUTING -s 10.88.0.2/32 -j NSNET-TEST",
		},
		Files: []string{
			filepath.Join(ipamDir, "net1", "10.88.0.2"),
			filepath.Join(stateDir, "net1", "c1-eth0"),
		},
		ContainerLinks: []string{c.Name() + ": eth0 (veth)"},
	}
	if got.String() != want.String() {
		t.Errorf("FindLeftovers:\ngot\n%s\nwant\n%s", got, want)
	}

	opts.Baseline = got
	if again, err := FindLeftovers(host, opts); err != nil || !again.Empty() {
		t.Errorf("with the current state as baseline: leftovers %v, err %v", again, err)
	}
}
