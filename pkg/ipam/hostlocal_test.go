package ipam

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestDel(t *testing.T) {
	dual := `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`
	tests := []struct {
		name    string
		files   map[string]string // present before the DEL
		ipam    string
		network string
		hint    []string
		want    []string // address files left afterwards
		// again is left after a second DEL when it differs from want.
		again []string
	}{
		{
			name:  "scan removes both families of the attachment only",
			files: map[string]string{"10.1.0.2": "a\r\neth0", "fd00::2": "a\r\neth0", "10.1.0.3": "a\r\neth1", "10.1.0.4": "b\r\neth0"},
			want:  []string{"10.1.0.3", "10.1.0.4"},
		},
		{
			name:  "hint removes only the hinted files",
			files: map[string]string{"10.1.0.2": "a\r\neth0", "fd00::2": "a\r\neth0"},
			hint:  []string{"10.1.0.2"},
			want:  []string{"fd00::2"},
		},
		{
			name:  "hint leaves a file that now belongs to someone else",
			files: map[string]string{"10.1.0.2": "b\r\neth0"},
			hint:  []string{"10.1.0.2", "10.1.0.99"},
			want:  []string{"10.1.0.2"},
		},
		{
			name:  "hint given as a 16-byte IPv4",
			files: map[string]string{"10.1.0.2": "a\r\neth0"},
			hint:  []string{"::ffff:10.1.0.2"},
		},
		{
			name:  "scan removes a legacy file when nothing matches exactly",
			files: map[string]string{"10.1.0.2": "a", "10.1.0.3": "b"},
			want:  []string{"10.1.0.3"},
		},
		{
			name:  "scan keeps legacy files when an exact match exists, like host-local",
			files: map[string]string{"10.1.0.2": "a\r\neth0", "10.1.0.3": "a"},
			want:  []string{"10.1.0.3"},
			again: []string{},
		},
		{
			name:  "hint removes a legacy file of the container",
			files: map[string]string{"10.1.0.2": "a\n"},
			hint:  []string{"10.1.0.2"},
		},
		{
			name:  "already released",
			files: map[string]string{"10.1.0.4": "b\r\neth0"},
			want:  []string{"10.1.0.4"},
		},
		{
			name:  "scan works with ranges that no longer validate",
			ipam:  `"subnet":"10.1.0.5/24"`,
			files: map[string]string{"10.1.0.2": "a\r\neth0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			dir := netDir(dataDir)
			writeFile(t, filepath.Join(dir, "lock"), "")
			writeFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.1.0.2")
			for name, content := range tt.files {
				writeFile(t, filepath.Join(dir, name), content)
			}
			if tt.ipam == "" {
				tt.ipam = dual
			}
			r := req(hlConf(dataDir, tt.ipam, ""), "a")
			h := newHostLocal()
			left := tt.want
			for i := range 2 {
				if err := h.Del(t.Context(), r, ips(tt.hint...)); err != nil {
					t.Fatalf("DEL %d: %v", i, err)
				}
				want := append([]string{"last_reserved_ip.0", "lock"}, left...)
				slices.Sort(want)
				if got := listDir(t, dir); !slices.Equal(got, want) {
					t.Errorf("DEL %d left %q, want %q", i, got, want)
				}
				if tt.again != nil {
					left = tt.again
				}
			}
		})
	}
}

func TestDelAfterAdd(t *testing.T) {
	dataDir := t.TempDir()
	stdin := hlConf(dataDir, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`, "")
	h := newHostLocal()
	for _, hinted := range []bool{true, false} {
		res, err := h.Add(t.Context(), req(stdin, "a"))
		if err != nil {
			t.Fatal(err)
		}
		var hint []string
		if hinted {
			for _, ip := range res.IPs {
				hint = append(hint, ip.Address.IP.String())
			}
		}
		if err := h.Del(t.Context(), req(stdin, "a"), ips(hint...)); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, netDir(dataDir)); !slices.Equal(got, []string{"last_reserved_ip.0", "last_reserved_ip.1", "lock"}) {
			t.Errorf("hint=%t: left %q", hinted, got)
		}
	}
}

func TestDelStaleTempAndMissingStore(t *testing.T) {
	dataDir := t.TempDir()
	dir := netDir(dataDir)
	stdin := hlConf(dataDir, `"subnet":"10.1.0.0/24"`, "")
	h := newHostLocal()
	if err := h.Del(t.Context(), req(stdin, "a"), nil); err != nil {
		t.Fatalf("Del without a store: %v", err)
	}
	if exists(dir) {
		t.Error("Del created the store")
	}
	// A crashed ADD leaves at most a complete temp file; a scanning DEL
	// under the lock knows it is stale.
	writeFile(t, filepath.Join(dir, tmpPrefix+"crashed"), "a\r\neth0")
	writeFile(t, filepath.Join(dir, ".someone-elses"), "")
	if err := h.Del(t.Context(), req(stdin, "a"), nil); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{".someone-elses", "lock"}) {
		t.Errorf("left %q", got)
	}
}

func TestDelRenamedNetwork(t *testing.T) {
	dataDir := t.TempDir()
	writeFile(t, filepath.Join(netDir(dataDir), "10.1.0.2"), "a\r\neth0")
	renamed := []byte(strings.Replace(string(hlConf(dataDir, `"subnet":"10.1.0.0/24"`, "")), `"name":"net1"`, `"name":"net2"`, 1))
	r := req(renamed, "a")
	r.Network = testNet
	if err := newHostLocal().Del(t.Context(), r, nil); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(netDir(dataDir), "10.1.0.2")) {
		t.Error("reservation in the ADD-time network survived")
	}
	if exists(filepath.Join(dataDir, "net2")) {
		t.Error("DEL touched the new name's store")
	}
}

func TestCheck(t *testing.T) {
	dataDir := t.TempDir()
	dir := netDir(dataDir)
	writeFile(t, filepath.Join(dir, "10.1.0.2"), "a\r\neth0")
	writeFile(t, filepath.Join(dir, "fd00::2"), "a\r\neth0")
	writeFile(t, filepath.Join(dir, "10.1.0.3"), "b\r\neth0")
	writeFile(t, filepath.Join(dir, "10.1.0.4"), "old")
	stdin := hlConf(dataDir, `"subnet":"10.1.0.0/24"`, "")
	tests := []struct {
		id    string
		ips   []string
		error []string
	}{
		{id: "a", ips: []string{"10.1.0.2", "fd00::2"}},
		{id: "a"},
		{id: "old", ips: []string{"10.1.0.4"}},
		{id: "old"},
		{id: "a", ips: []string{"10.1.0.2", "10.1.0.9"}, error: []string{"10.1.0.9 is not reserved"}},
		{id: "a", ips: []string{"10.1.0.3"}, error: []string{`10.1.0.3 is reserved for container "b" interface "eth0"`}},
		{id: "c", error: []string{`no address reserved for container "c" interface "eth0"`}},
	}
	for _, tt := range tests {
		err := newHostLocal().Check(t.Context(), req(stdin, tt.id), ips(tt.ips...))
		if len(tt.error) == 0 {
			if err != nil {
				t.Errorf("%s %v: %v", tt.id, tt.ips, err)
			}
			continue
		}
		for _, want := range tt.error {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s %v: got %v, want %q", tt.id, tt.ips, err, want)
			}
		}
	}
	missing := hlConf(filepath.Join(dataDir, "nowhere"), `"subnet":"10.1.0.0/24"`, "")
	if err := newHostLocal().Check(t.Context(), req(missing, "a"), ips("10.1.0.2")); err == nil {
		t.Error("Check passed without a store")
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		name  string
		ipam  string
		files []string
		code  uint
		msg   string
	}{
		{name: "empty pool", ipam: `"subnet":"10.1.0.0/24"`},
		{name: "one address left", ipam: `"subnet":"10.1.0.0/29"`, files: []string{"10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.6"}},
		{
			name:  "exhausted",
			ipam:  `"subnet":"10.1.0.0/30"`,
			files: []string{"10.1.0.2"},
			code:  types.ErrPluginNotAvailable,
			msg:   "no IP addresses available in range set 10.1.0.0/30",
		},
		{
			name:  "one family of two exhausted",
			ipam:  `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/126"}]]`,
			files: []string{"fd00::2", "fd00::3"},
			code:  types.ErrPluginNotAvailable,
			msg:   "fd00::/126",
		},
		{name: "invalid config", ipam: `"subnet":"10.1.0.0/31"`, code: types.ErrInvalidNetworkConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			for _, f := range tt.files {
				writeFile(t, filepath.Join(netDir(dataDir), f), "x\r\neth0")
			}
			err := newHostLocal().Status(t.Context(), Request{Stdin: hlConf(dataDir, tt.ipam, "")})
			if errCode(err) != tt.code || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
				t.Fatalf("got %v (code %d), want code %d %q", err, errCode(err), tt.code, tt.msg)
			}
			if !exists(netDir(dataDir)) {
				return
			}
			for _, n := range listDir(t, netDir(dataDir)) {
				if strings.HasPrefix(n, tmpPrefix) {
					t.Errorf("probe %s left behind", n)
				}
			}
		})
	}
}

func TestStatusUnusableDataDir(t *testing.T) {
	base := t.TempDir()
	notADir := filepath.Join(base, "file")
	writeFile(t, notADir, "")
	err := newHostLocal().Status(t.Context(), Request{Stdin: hlConf(notADir, `"subnet":"10.1.0.0/24"`, "")})
	if errCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "data dir") {
		t.Errorf("data dir under a file: %v (code %d)", err, errCode(err))
	}

	if os.Geteuid() == 0 {
		t.Log("read-only directory case skipped: root ignores directory permissions")
		return
	}
	ro := filepath.Join(base, "ro")
	if err := os.MkdirAll(netDir(ro), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(netDir(ro), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(netDir(ro), 0o755) })
	err = newHostLocal().Status(t.Context(), Request{Stdin: hlConf(ro, `"subnet":"10.1.0.0/24"`, "")})
	if errCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("read-only data dir: %v (code %d)", err, errCode(err))
	}
}
