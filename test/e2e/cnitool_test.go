package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/test/harness"
)

// TestCnitool drives shipped conflists with upstream cnitool: ADD with a published port,
// reachability, CHECK, then teardown. For the 1.0.0 list the teardown is DEL; for the 1.1.0
// list it is STATUS and then `cnitool gc`, which DELs every cached attachment and sends GC
// without valid attachments. A second DEL follows, with the cache gone and so without
// prevResult, as runtimes send after a crash.
func TestCnitool(t *testing.T) {
	for _, tc := range []struct {
		conflist string
		gc       bool
	}{
		{"10-bridge-lite.conflist", false},
		{"99-nsnet.conflist", true},
	} {
		t.Run(tc.conflist, func(t *testing.T) {
			sc := newScenario(t)
			s := sc.Sandbox
			conf := s.installConflist(t, tc.conflist)
			c := sc.Host.NewContainer(t)
			startBareHTTPD(t, c)
			// The harness names the container netns in the machine's /run/netns, which the
			// sandbox's own /run hides; the test process's root leads back to it.
			netnsPath := fmt.Sprintf("/proc/%d/root%s", os.Getpid(), c.Path())
			const hostPort = 8080
			env := []string{
				"NETCONFPATH=" + cniConfDir,
				"CNI_PATH=" + cniBinDir,
				fmt.Sprintf(`CAP_ARGS={"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]}`, hostPort),
			}
			cnitool := func(args ...string) (string, error) {
				return s.run(time.Minute, env, append([]string{sc.Bins.Cnitool}, args...)...)
			}

			out, err := cnitool("add", conf.Name, netnsPath)
			if err != nil {
				t.Fatal(err)
			}
			res, err := types100.NewResult([]byte(out))
			if err != nil {
				t.Fatalf("cnitool add printed no result: %v\n%s", err, out)
			}
			r100, err := types100.GetResult(res)
			if err != nil || len(r100.IPs) == 0 {
				t.Fatalf("ADD result has no IPs: %v\n%s", err, out)
			}
			containerChecks{
				Sandbox:  s,
				Conflist: conf,
				IP:       r100.IPs[0].Address.IP,
				Exec: func(args ...string) (string, error) {
					b, err := c.Exec(t, append([]string{"timeout", execTimeout, "busybox"}, args...)...)
					return string(b), err
				},
				ExtURL:   sc.ExtURL,
				HostPort: hostPort,
			}.run(t)

			if _, err := cnitool("check", conf.Name, netnsPath); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if tc.gc {
				if _, err := cnitool("status", conf.Name, netnsPath); err != nil {
					t.Errorf("STATUS: %v", err)
				}
				if _, err := cnitool("gc", conf.Name, netnsPath); err != nil {
					t.Errorf("GC: %v", err)
				}
			} else if _, err := cnitool("del", conf.Name, netnsPath); err != nil {
				t.Errorf("DEL: %v", err)
			}
			if _, err := cnitool("del", conf.Name, netnsPath); err != nil {
				t.Errorf("second DEL (no prevResult): %v", err)
			}
			s.assertNoLeftovers(t, conf, c)

			calls := s.calls(t)
			logCalls(t, calls)
			for _, p := range ourPlugins {
				dels := filterCalls(calls, p, "DEL")
				if len(dels) != 2 || !dels[0].prevResult() || dels[1].prevResult() {
					t.Errorf("%s: want a DEL with prevResult, then one without; got %v", p, dels)
				}
				if n := len(filterCalls(calls, p, "CHECK")); n != 1 {
					t.Errorf("%s: %d CHECK calls, want 1", p, n)
				}
				if tc.gc {
					gcs := filterCalls(calls, p, "GC")
					if len(gcs) != 1 {
						t.Errorf("%s: %d GC calls, want 1", p, len(gcs))
					} else if _, ok := gcs[0].Config["cni.dev/valid-attachments"]; ok {
						t.Errorf("%s: cnitool gc sent valid attachments: %v", p, gcs[0].Config)
					}
				}
			}
		})
	}
}

// startBareHTTPD serves the test image's web root (an index page and cgi-bin/whoami) on port 80
// of netns c with the machine's busybox, for scenarios whose "container" is a bare netns.
func startBareHTTPD(t *testing.T, c *harness.NetNS) {
	t.Helper()
	requireCommand(t, "busybox")
	www := filepath.Join(t.TempDir(), "www")
	if err := os.MkdirAll(filepath.Join(www, "cgi-bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "cgi-bin", "whoami"), []byte(whoamiCGI), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := c.Command("busybox", "httpd", "-f", "-p", "80", "-h", www)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting httpd in %s: %v", c.Name(), err)
	}
	// No wait for it to listen: the checks reach it with httpGet, which retries until it does.
	t.Cleanup(func() {
		// `ip netns exec` execs busybox, so this PID is the server itself.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
}
