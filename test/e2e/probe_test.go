package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

// extWhoamiPort is where the outside world (the sandbox host's ext netns) answers HTTP requests
// with the client address it sees: containers fetch it to show that their egress is masqueraded.
const extWhoamiPort = 8081

// startExtWhoami serves whoami over HTTP in host.Ext until the test ends and returns its URL.
func startExtWhoami(t *testing.T, host *harness.Host) string {
	t.Helper()
	var ln net.Listener
	err := host.Ext.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", extWhoamiPort))
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", host.Ext.Name(), err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ip, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintln(w, ip)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return fmt.Sprintf("http://%s:%d/", harness.ExtUplinkIP, extWhoamiPort)
}

// httpGet fetches url from inside netns from, retrying failed connections until within has
// passed (a server that just started may not listen yet), and returns the trimmed body.
func httpGet(from *harness.NetNS, url string, within time.Duration) (string, error) {
	client := &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			// A socket belongs to the netns it was created in, so only the dial needs the switch.
			DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
				err = from.Do(func() (err error) {
					conn, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
					return err
				})
				return conn, err
			},
		},
	}
	var body string
	err := waitFor(within, func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		body = strings.TrimSpace(string(b))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("GET %s from %s: %w", url, from.Name(), err)
	}
	return body, nil
}

// whoamiURL is the container web server's whoami page at addr (host or host:port).
func whoamiURL(addr string) string { return "http://" + addr + "/cgi-bin/whoami" }

// execFunc runs a busybox applet with arguments inside a container through its client, killing
// it after execTimeout. (busybox 1.35's own `wget -T` crashes, so the bound comes from outside.)
type execFunc func(args ...string) (string, error)

const execTimeout = "10"

// containerChecks is what every client scenario verifies about a running container that serves
// the image's web root on port 80.
type containerChecks struct {
	Sandbox  *sandbox
	Conflist *shippedConflist
	IP       net.IP
	Exec     execFunc
	ExtURL   string
	// HostPort is the published host port, 0 when the client cannot publish one.
	HostPort int
}

// run checks: the address is in the network's range; the default route goes via the gateway
// (the first address of the range); egress to the outside world is masqueraded to the host's
// uplink address; the server answers from the host netns (seeing the bridge address); and,
// with a host port, from the outside world through the host's uplink address (seeing the
// client's own address), and from the container itself through the host port (hairpin, seeing
// the bridge address).
func (c containerChecks) run(t *testing.T) {
	t.Helper()
	_, subnet, err := net.ParseCIDR(c.Conflist.Subnets[0])
	if err != nil {
		t.Fatal(err)
	}
	if !subnet.Contains(c.IP) {
		t.Errorf("container address %s is not in the network's range %s", c.IP, subnet)
	}
	gw := make(net.IP, len(subnet.IP))
	copy(gw, subnet.IP)
	gw[len(gw)-1]++
	routes, err := c.Exec("ip", "-4", "route", "show", "default")
	if err != nil {
		t.Errorf("reading the container's routes: %v", err)
	} else if !strings.Contains(routes, "default via "+gw.String()+" ") {
		t.Errorf("container's default route %q, want via gateway %s", strings.TrimSpace(routes), gw)
	}
	if c.Conflist.Masquerade {
		out, err := c.Exec("wget", "-q", "-O", "-", c.ExtURL)
		if err != nil {
			t.Errorf("container cannot reach the outside world: %v", err)
		} else if got := strings.TrimSpace(out); got != harness.HostUplinkIP {
			t.Errorf("the outside world saw the container as %q, want the host's uplink address %s (masquerade)", got, harness.HostUplinkIP)
		}
	}
	host := c.Sandbox.Host
	if got, err := httpGet(host.NetNS, whoamiURL(c.IP.String()), 10*time.Second); err != nil {
		t.Errorf("the host cannot reach the container's server: %v", err)
	} else if got := canonicalIP(got); got != gw.String() {
		t.Errorf("the container saw the host as %q, want the bridge address %s", got, gw)
	}
	t.Logf("container %s in %s, default route via %s, reachable from the host", c.IP, subnet, gw)
	if c.HostPort == 0 {
		return
	}
	published := fmt.Sprintf("%s:%d", harness.HostUplinkIP, c.HostPort)
	if got, err := httpGet(host.Ext, whoamiURL(published), 10*time.Second); err != nil {
		t.Errorf("the outside world cannot reach the host port: %v", err)
	} else if got := canonicalIP(got); got != harness.ExtUplinkIP {
		t.Errorf("through the host port the container saw %q, want the client's own address %s", got, harness.ExtUplinkIP)
	}
	if out, err := c.Exec("wget", "-q", "-O", "-", whoamiURL(published)); err != nil {
		t.Errorf("the container cannot reach itself through the host port (hairpin): %v", err)
	} else if got := canonicalIP(strings.TrimSpace(out)); got != gw.String() {
		t.Errorf("through its own host port the container saw itself as %q, want the bridge address %s (hairpin masquerade)", got, gw)
	}
	t.Logf("host port %d reachable from outside and from the container itself (hairpin)", c.HostPort)
}

// canonicalIP turns the address a server reports ("[::ffff:10.0.0.1]" from a dual-stack
// socket) into its plain form; anything else is returned unchanged.
func canonicalIP(s string) string {
	if ip := net.ParseIP(strings.Trim(s, "[]")); ip != nil {
		return ip.String()
	}
	return s
}
