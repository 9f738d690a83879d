package ipam

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"
)

const dualRanges = `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/64"}]]`

// TestOnDiskFormat pins the bytes host-local reads and writes.
func TestOnDiskFormat(t *testing.T) {
	dataDir := t.TempDir()
	stdin := hlConf(dataDir, dualRanges, "")
	if _, err := newHostLocal().Add(t.Context(), Request{Stdin: stdin, Attachment: Attachment{ContainerID: " ctr1 ", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	dir := netDir(dataDir)
	if got := listDir(t, dir); !slices.Equal(got, []string{"10.1.0.2", "fd00::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"}) {
		t.Fatalf("store holds %q", got)
	}
	golden := map[string]string{
		"10.1.0.2":           "ctr1\r\neth0",
		"fd00::2":            "ctr1\r\neth0",
		"last_reserved_ip.0": "10.1.0.2",
		"last_reserved_ip.1": "fd00::2",
		"lock":               "",
	}
	for name, want := range golden {
		if got := readFile(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("store dir mode: %v %v", st.Mode(), err)
	}
}

// TestReadsHostLocalStore works on a store as the reference binary leaves it.
func TestReadsHostLocalStore(t *testing.T) {
	dataDir := t.TempDir()
	dir := netDir(dataDir)
	writeFile(t, filepath.Join(dir, "lock"), "")
	writeFile(t, filepath.Join(dir, "10.1.0.2"), "hl\r\neth0")
	writeFile(t, filepath.Join(dir, "fd00::2"), "hl\r\neth0")
	writeFile(t, filepath.Join(dir, "10.1.0.3"), "ancient")
	writeFile(t, filepath.Join(dir, "last_reserved_ip.0"), "10.1.0.3")
	writeFile(t, filepath.Join(dir, "last_reserved_ip.1"), "fd00::2")
	stdin := hlConf(dataDir, dualRanges, "")
	h := newHostLocal()

	res, err := h.Add(t.Context(), req(stdin, "ours"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(addrs(res), ","); got != "10.1.0.4/24,fd00::3/64" {
		t.Errorf("got %s", got)
	}
	if err := h.Check(t.Context(), req(stdin, "hl"), ips("10.1.0.2", "fd00::2")); err != nil {
		t.Errorf("Check of host-local's reservation: %v", err)
	}
	if err := h.Del(t.Context(), req(stdin, "hl"), nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Del(t.Context(), req(stdin, "ancient"), nil); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); !slices.Equal(got, []string{"10.1.0.4", "fd00::3", "last_reserved_ip.0", "last_reserved_ip.1", "lock"}) {
		t.Errorf("store holds %q", got)
	}
}

// TestSharesHostLocalLock holds the lock the way host-local's filemutex does.
func TestSharesHostLocalLock(t *testing.T) {
	dataDir := t.TempDir()
	dir := netDir(dataDir)
	writeFile(t, filepath.Join(dir, "lock"), "")
	fd, err := unix.Open(filepath.Join(dir, "lock"), unix.O_CREAT|unix.O_RDONLY|unix.O_CLOEXEC, 0o750)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	h := &hostLocal{lockTimeout: 100 * time.Millisecond}
	_, err = h.Add(t.Context(), req(hlConf(dataDir, `"subnet":"10.1.0.0/24"`, ""), "a"))
	if errCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("got %v, want code 11", err)
	}
}

// TestAddressNames checks that file names match net.IP.String, which
// host-local uses.
func TestAddressNames(t *testing.T) {
	for _, s := range []string{"10.1.0.2", "fd00::2", "fd00:0:0:1::", "2001:db8:0:1:1:1:1:1", "fd00::1:0:0:0:1", "::ffff:1.2.3.4", "fe80::a:0:0:0", "1:0:0:1:0:0:0:1"} {
		ip := net.ParseIP(s)
		name, err := hintName(ip)
		if err != nil {
			t.Fatal(err)
		}
		if name != ip.String() {
			t.Errorf("%s: our name %q, host-local's %q", s, name, ip.String())
		}
		if a := netip.MustParseAddr(s).Unmap(); a.String() != ip.String() {
			t.Errorf("%s: netip %q, net %q", s, a, ip)
		}
	}
}

// TestReferenceBinary interleaves this driver and the reference host-local
// binary on one store. Set NSNET_HOSTLOCAL_BIN to a host-local build
// (containernetworking/plugins) to run it.
func TestReferenceBinary(t *testing.T) {
	bin := os.Getenv("NSNET_HOSTLOCAL_BIN")
	if bin == "" {
		t.Skip("NSNET_HOSTLOCAL_BIN not set")
	}
	dataDir := t.TempDir()
	dir := netDir(dataDir)
	stdin := hlConf(dataDir, dualRanges, "")
	run := func(cmd, id string, stdin []byte) (string, error) {
		c := exec.CommandContext(t.Context(), bin)
		c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, "CNI_CONTAINERID="+id, "CNI_IFNAME=eth0",
			"CNI_NETNS=/nonexistent/netns", "CNI_PATH="+filepath.Dir(bin), "CNI_ARGS=")
		c.Stdin = bytes.NewReader(stdin)
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		err := c.Run()
		return out.String(), err
	}
	theirAdd := func(id string) string {
		out, err := run("ADD", id, stdin)
		if err != nil {
			t.Fatalf("host-local ADD %s: %v: %s", id, err, out)
		}
		var res struct {
			IPs []struct{ Address string } `json:"ips"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ip := range res.IPs {
			got = append(got, ip.Address)
		}
		return strings.Join(got, ",")
	}
	h := newHostLocal()
	ourAdd := func(id string) string {
		res, err := h.Add(t.Context(), req(stdin, id))
		if err != nil {
			t.Fatalf("our ADD %s: %v", id, err)
		}
		return strings.Join(addrs(res), ",")
	}

	steps := []struct{ got, want string }{
		{ourAdd("a"), "10.1.0.2/24,fd00::2/64"},
		{theirAdd("b"), "10.1.0.3/24,fd00::3/64"},
		{ourAdd("c"), "10.1.0.4/24,fd00::4/64"},
		{theirAdd("d"), "10.1.0.5/24,fd00::5/64"},
	}
	for i, s := range steps {
		if s.got != s.want {
			t.Fatalf("step %d: got %s, want %s", i, s.got, s.want)
		}
	}
	if got, want := readFile(t, filepath.Join(dir, "10.1.0.3")), readFile(t, filepath.Join(dir, "10.1.0.2")); got != strings.Replace(want, "a", "b", 1) {
		t.Errorf("host-local wrote %q, we wrote %q", got, want)
	}
	if out, err := run("CHECK", "a", stdin); err != nil {
		t.Errorf("host-local CHECK of our reservation: %v: %s", err, out)
	}
	if err := h.Check(t.Context(), req(stdin, "b"), ips("10.1.0.3", "fd00::3")); err != nil {
		t.Errorf("our CHECK of host-local's reservation: %v", err)
	}
	if out, err := run("DEL", "a", stdin); err != nil {
		t.Fatalf("host-local DEL: %v: %s", err, out)
	}
	if err := h.Del(t.Context(), req(stdin, "b"), ips("10.1.0.3", "fd00::3")); err != nil {
		t.Fatal(err)
	}
	want := []string{"10.1.0.4", "10.1.0.5", "fd00::4", "fd00::5", "last_reserved_ip.0", "last_reserved_ip.1", "lock"}
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Fatalf("after DELs: %q", got)
	}

	// Their ADD must wait for our lock.
	holder, err := openStore(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.lock(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		out, err := run("ADD", "e", stdin)
		if err != nil {
			out = "error: " + out
		}
		done <- out
	}()
	select {
	case out := <-done:
		t.Fatalf("host-local ADD did not wait for our lock: %s", out)
	case <-time.After(300 * time.Millisecond):
	}
	holder.close()
	if out := <-done; strings.HasPrefix(out, "error") {
		t.Fatal(out)
	}
}
