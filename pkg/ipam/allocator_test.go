package ipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

func TestLastAddr(t *testing.T) {
	tests := map[string]string{
		"10.1.0.0/24":   "10.1.0.255",
		"10.1.0.0/22":   "10.1.3.255",
		"10.0.0.0/8":    "10.255.255.255",
		"fd00::/64":     "fd00::ffff:ffff:ffff:ffff",
		"fd00::/126":    "fd00::3",
		"fd00:0:8::/45": "fd00:0:f:ffff:ffff:ffff:ffff:ffff",
	}
	for p, want := range tests {
		r, err := newRange(rangeJSON{Subnet: p})
		if err != nil {
			t.Fatal(err)
		}
		if got := lastAddr(r.subnet).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}

// TestAllocationOrder runs ADD ("+id") and DEL ("-id") sequences; each ADD
// lists the address it must get, "full" for an exhausted pool.
func TestAllocationOrder(t *testing.T) {
	tests := []struct {
		name  string
		ipam  string
		setup func(t *testing.T, dir string)
		ops   []string
	}{
		{
			name: "skips gateway, network and broadcast, then exhausts",
			ipam: `"subnet":"10.1.0.0/29"`,
			ops:  []string{"+a 10.1.0.2/29", "+b 10.1.0.3/29", "+c 10.1.0.4/29", "+d 10.1.0.5/29", "+e 10.1.0.6/29", "+f full"},
		},
		{
			name: "round-robin does not reuse a just-freed address",
			ipam: `"subnet":"10.1.0.0/24"`,
			ops:  []string{"+a 10.1.0.2/24", "+b 10.1.0.3/24", "-a", "+c 10.1.0.4/24", "-b", "+d 10.1.0.5/24"},
		},
		{
			name: "wraps to the start after the end",
			ipam: `"subnet":"10.1.0.0/29"`,
			ops:  []string{"+a 10.1.0.2/29", "+b 10.1.0.3/29", "+c 10.1.0.4/29", "+d 10.1.0.5/29", "+e 10.1.0.6/29", "-b", "+f 10.1.0.3/29", "-a", "+g 10.1.0.2/29"},
		},
		{
			name: "gateway in the middle of the range",
			ipam: `"ranges":[[{"subnet":"10.1.0.0/29","gateway":"10.1.0.4"}]]`,
			ops:  []string{"+a 10.1.0.1/29", "+b 10.1.0.2/29", "+c 10.1.0.3/29", "+d 10.1.0.5/29", "+e 10.1.0.6/29", "+f full"},
		},
		{
			name: "explicit rangeStart at the network address",
			ipam: `"ranges":[[{"subnet":"10.1.0.0/30","rangeStart":"10.1.0.0","rangeEnd":"10.1.0.3"}]]`,
			ops:  []string{"+a 10.1.0.2/30", "+b full"},
		},
		{
			name: "narrowed range",
			ipam: `"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.100","rangeEnd":"10.1.0.101"}]]`,
			ops:  []string{"+a 10.1.0.100/24", "+b 10.1.0.101/24", "+c full", "-a", "+d 10.1.0.100/24"},
		},
		{
			name: "pool moves to the next subnet",
			ipam: `"ranges":[[{"subnet":"10.1.0.0/30"},{"subnet":"10.2.0.0/29","rangeEnd":"10.2.0.3"}]]`,
			ops:  []string{"+a 10.1.0.2/30", "+b 10.2.0.2/29", "+c 10.2.0.3/29", "+d full", "-a", "+e 10.1.0.2/30"},
		},
		{
			name: "IPv6 hands out the last address",
			ipam: `"ranges":[[{"subnet":"fd00::/126"}]]`,
			ops:  []string{"+a fd00::2/126", "+b fd00::3/126", "+c full"},
		},
		{
			name: "dual stack takes one of each",
			ipam: `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`,
			ops:  []string{"+a 10.1.0.2/24,fd00::2/64", "+b 10.1.0.3/24,fd00::3/64"},
		},
		{
			name: "continues after host-local's last_reserved_ip",
			ipam: `"subnet":"10.1.0.0/24"`,
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.1.0.41")
			},
			ops: []string{"+a 10.1.0.42/24"},
		},
		{
			name: "last_reserved_ip at rangeEnd wraps",
			ipam: `"subnet":"10.1.0.0/24"`,
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.1.0.254")
			},
			ops: []string{"+a 10.1.0.2/24"},
		},
		{
			name: "stale or garbage last_reserved_ip restarts at rangeStart",
			ipam: `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`,
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.9.0.7")
				writeFile(t, filepath.Join(dir, "last_reserved_ip.1"), "bogus")
			},
			ops: []string{"+a 10.1.0.2/24,fd00::2/64"},
		},
		{
			name: "skips addresses reserved by others",
			ipam: `"subnet":"10.1.0.0/24"`,
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "10.1.0.2"), "x\r\neth0")
				writeFile(t, filepath.Join(dir, "10.1.0.3"), "y")
			},
			ops: []string{"+a 10.1.0.4/24"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, netDir(dataDir))
			}
			h := newHostLocal()
			stdin := hlConf(dataDir, tt.ipam, "")
			for _, op := range tt.ops {
				id, want, _ := strings.Cut(op[1:], " ")
				if op[0] == '-' {
					if err := h.Del(t.Context(), req(stdin, id), nil); err != nil {
						t.Fatalf("%s: %v", op, err)
					}
					continue
				}
				res, err := h.Add(t.Context(), req(stdin, id))
				if want == "full" {
					if err == nil || !strings.Contains(err.Error(), "no IP addresses available") {
						t.Fatalf("%s: got %v, %v; want exhaustion", op, res, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", op, err)
				}
				if got := strings.Join(addrs(res), ","); got != want {
					t.Fatalf("%s: got %s", op, got)
				}
			}
		})
	}
}

func TestAddResult(t *testing.T) {
	dataDir := t.TempDir()
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	writeFile(t, resolv, "nameserver 10.0.0.53\nsearch example.com\n")
	stdin := hlConf(dataDir, fmt.Sprintf(`"resolvConf":%q,"ranges":[[{"subnet":"10.1.0.0/24","gateway":"10.1.0.254"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"10.9.0.0/16","gw":"10.1.0.9"}]`, resolv), "")
	res, err := newHostLocal().Add(t.Context(), req(stdin, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if res.CNIVersion != "1.1.0" || len(res.IPs) != 1 || len(res.Interfaces) != 0 {
		t.Fatalf("unexpected result %+v", res)
	}
	ip := res.IPs[0]
	if ip.Address.String() != "10.1.0.1/24" || ip.Gateway.String() != "10.1.0.254" || ip.Interface != nil || len(ip.Address.IP) != 4 {
		t.Errorf("ip = %+v", ip)
	}
	if len(res.Routes) != 2 || res.Routes[0].Dst.String() != "0.0.0.0/0" || res.Routes[0].GW != nil || res.Routes[1].GW.String() != "10.1.0.9" {
		t.Errorf("routes = %v", res.Routes)
	}
	if !slices.Equal(res.DNS.Nameservers, []string{"10.0.0.53"}) || !slices.Equal(res.DNS.Search, []string{"example.com"}) {
		t.Errorf("dns = %+v", res.DNS)
	}

	old := []byte(strings.Replace(string(stdin), `"cniVersion":"1.1.0"`, `"cniVersion":"1.0.0"`, 1))
	if res, err := newHostLocal().Add(t.Context(), req(old, "b")); err != nil || res.CNIVersion != "1.0.0" {
		t.Errorf("1.0.0 config: %v, %v", res, err)
	}
	older := []byte(strings.Replace(string(stdin), `"cniVersion":"1.1.0"`, `"cniVersion":"0.4.0"`, 1))
	if res, err := newHostLocal().Add(t.Context(), req(older, "c")); err != nil || res.CNIVersion != "1.1.0" {
		t.Errorf("0.4.0 config: %v, %v", res, err)
	}
}

func TestAddNeedsAttachment(t *testing.T) {
	stdin := hlConf(t.TempDir(), `"subnet":"10.1.0.0/24"`, "")
	for _, a := range []Attachment{{IfName: "eth0"}, {ContainerID: "a"}} {
		_, err := newHostLocal().Add(t.Context(), Request{Stdin: stdin, Attachment: a})
		if errCode(err) != types.ErrInvalidEnvironmentVariables {
			t.Errorf("%+v: %v, want code 4", a, err)
		}
	}
}

func TestExhaustion(t *testing.T) {
	dataDir := t.TempDir()
	stdin := hlConf(dataDir, `"subnet":"10.1.0.0/30"`, "")
	h := newHostLocal()
	if _, err := h.Add(t.Context(), req(stdin, "a")); err != nil {
		t.Fatal(err)
	}
	_, err := h.Add(t.Context(), req(stdin, "b"))
	if errCode(err) != types.ErrInternal || err.Error() != "no IP addresses available in range set 10.1.0.0/30" {
		t.Fatalf("got %v (code %d)", err, errCode(err))
	}
	if got := listDir(t, netDir(dataDir)); !slices.Equal(got, []string{"10.1.0.2", "last_reserved_ip.0", "lock"}) {
		t.Errorf("left behind %q", got)
	}
}

func TestRequestedIPs(t *testing.T) {
	ranges := `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`
	tests := []struct {
		name  string
		extra string
		args  string
		want  string
	}{
		{name: "CNI_ARGS", args: "IgnoreUnknown=1;IP=10.1.0.77,fd00::77", want: "10.1.0.77/24,fd00::77/64"},
		{name: "args.cni.ips with prefix", extra: `"args":{"cni":{"ips":["10.1.0.78/24"]}}`, want: "10.1.0.78/24,fd00::2/64"},
		{name: "runtimeConfig.ips", extra: `"runtimeConfig":{"ips":["fd00::79/64"]}`, want: "10.1.0.2/24,fd00::79/64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			r := req(hlConf(dataDir, ranges, tt.extra), "a")
			r.Args = tt.args
			res, err := newHostLocal().Add(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(addrs(res), ","); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestRollback checks that a failure in a later range set releases what the
// same ADD already reserved, and leaves others' reservations alone.
func TestRollback(t *testing.T) {
	tests := []struct {
		name  string
		ipam  string
		args  string
		taken map[string]string
		error string
	}{
		{
			name:  "second requested IP taken",
			ipam:  `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`,
			args:  "IP=10.1.0.5,fd00::5",
			taken: map[string]string{"fd00::5": "other\r\neth0"},
			error: "requested IP address fd00::5 is not available in range set fd00::/64",
		},
		{
			name:  "second set exhausted",
			ipam:  `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/126"}]]`,
			args:  "IP=10.1.0.5",
			taken: map[string]string{"fd00::2": "x\r\neth0", "fd00::3": "y\r\neth0"},
			error: "no IP addresses available in range set fd00::/126",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			dir := netDir(dataDir)
			for name, content := range tt.taken {
				writeFile(t, filepath.Join(dir, name), content)
			}
			r := req(hlConf(dataDir, tt.ipam, ""), "a")
			r.Args = tt.args
			_, err := newHostLocal().Add(t.Context(), r)
			if err == nil || !strings.Contains(err.Error(), tt.error) {
				t.Fatalf("got %v, want %q", err, tt.error)
			}
			if exists(filepath.Join(dir, "10.1.0.5")) {
				t.Error("10.1.0.5 was not rolled back")
			}
			for name, content := range tt.taken {
				if got := readFile(t, filepath.Join(dir, name)); got != content {
					t.Errorf("%s changed to %q", name, got)
				}
			}
			for _, n := range listDir(t, dir) {
				if strings.HasPrefix(n, tmpPrefix) {
					t.Errorf("temp file %s left behind", n)
				}
			}
		})
	}
}

func TestLockTimeout(t *testing.T) {
	dataDir := t.TempDir()
	stdin := hlConf(dataDir, `"subnet":"10.1.0.0/24"`, "")
	if _, err := newHostLocal().Add(t.Context(), req(stdin, "a")); err != nil {
		t.Fatal(err)
	}
	holder, err := openStore(netDir(dataDir), false)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.close()
	if err := holder.lock(t.Context(), 0); err != nil {
		t.Fatal(err)
	}

	h := &hostLocal{lockTimeout: 50 * time.Millisecond}
	if _, err := h.Add(t.Context(), req(stdin, "b")); errCode(err) != types.ErrTryAgainLater {
		t.Errorf("Add: %v, want code 11", err)
	}
	if err := h.Del(t.Context(), req(stdin, "a"), nil); errCode(err) != types.ErrTryAgainLater {
		t.Errorf("Del: %v, want code 11", err)
	}
	if err := h.GC(t.Context(), req(stdin, ""), nil); errCode(err) != types.ErrTryAgainLater {
		t.Errorf("GC: %v, want code 11", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := newHostLocal().Add(ctx, req(stdin, "b")); !errors.Is(err, context.Canceled) {
		t.Errorf("Add with cancelled context: %v", err)
	}

	holder.close()
	if _, err := h.Add(t.Context(), req(stdin, "b")); err != nil {
		t.Errorf("Add after release: %v", err)
	}
}

func TestConcurrentAdds(t *testing.T) {
	const workers, perWorker = 8, 50
	dataDir := t.TempDir()
	stdin := hlConf(dataDir, `"ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"fd00::/64"}]]`, "")
	var (
		mu   sync.Mutex
		seen = map[string]string{}
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			h := newHostLocal()
			for i := range perWorker {
				id := fmt.Sprintf("c%d-%d", w, i)
				res, err := h.Add(t.Context(), req(stdin, id))
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				mu.Lock()
				for _, a := range addrs(res) {
					if prev, dup := seen[a]; dup {
						t.Errorf("%s given to %s and %s", a, prev, id)
					}
					seen[a] = id
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 2*workers*perWorker {
		t.Errorf("%d distinct addresses, want %d", len(seen), 2*workers*perWorker)
	}
	files := listDir(t, netDir(dataDir))
	if len(files) != 2*workers*perWorker+3 {
		t.Errorf("%d files in the store, want %d", len(files), 2*workers*perWorker+3)
	}
}

func BenchmarkAddDel(b *testing.B) {
	for _, existing := range []int{10, 500} {
		for _, hinted := range []bool{true, false} {
			name := fmt.Sprintf("existing=%d/hint=%t", existing, hinted)
			b.Run(name, func(b *testing.B) {
				dataDir := b.TempDir()
				stdin := hlConf(dataDir, `"subnet":"10.1.0.0/16"`, "")
				h := newHostLocal()
				for i := range existing {
					if _, err := h.Add(context.Background(), req(stdin, fmt.Sprintf("pre%d", i))); err != nil {
						b.Fatal(err)
					}
				}
				r := req(stdin, "bench")
				b.ResetTimer()
				for b.Loop() {
					res, err := h.Add(context.Background(), r)
					if err != nil {
						b.Fatal(err)
					}
					var hint []net.IP
					if hinted {
						hint = []net.IP{res.IPs[0].Address.IP}
					}
					if err := h.Del(context.Background(), r, hint); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(fakeIPAMEnv) != "" {
		os.Exit(fakeIPAM())
	}
	os.Exit(m.Run())
}

// TestLinkFallback runs allocation as on a file system without
// RENAME_NOREPLACE, where claims are made with link(2).
func TestLinkFallback(t *testing.T) {
	dataDir := t.TempDir()
	writeFile(t, filepath.Join(netDir(dataDir), "10.1.0.2"), "x\r\neth0")
	c, err := parseHostLocal(hlConf(dataDir, `"subnet":"10.1.0.0/24"`, ""), "", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStore(c.dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.linkOnly = true
	if err := s.lock(t.Context(), time.Second); err != nil {
		t.Fatal(err)
	}
	got, err := s.allocate(t.Context(), c.sets, make([]netip.Addr, 1), Attachment{ContainerID: "a", IfName: "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Address.String() != "10.1.0.3/24" {
		t.Fatalf("got %v", got)
	}
	if files := listDir(t, c.dir); !slices.Equal(files, []string{"10.1.0.2", "10.1.0.3", "last_reserved_ip.0", "lock"}) {
		t.Errorf("store holds %q", files)
	}
	if content := readFile(t, filepath.Join(c.dir, "10.1.0.3")); content != "a\r\neth0" {
		t.Errorf("content %q", content)
	}
}
