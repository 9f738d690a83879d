package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

const testNet = "net1"

// hlConf is a host-local network config named net1 using dataDir; ipam holds
// the further "ipam" members, extra further top-level members.
func hlConf(dataDir, ipam, extra string) []byte {
	if ipam != "" {
		ipam = "," + ipam
	}
	if extra != "" {
		extra = "," + extra
	}
	return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":%q,"type":"bridge-lite","ipam":{"type":"host-local","dataDir":%q%s}%s}`,
		testNet, dataDir, ipam, extra)
}

func newHostLocal() *hostLocal { return &hostLocal{lockTimeout: 5 * time.Second} }

func req(stdin []byte, id string) Request {
	return Request{Stdin: stdin, Attachment: Attachment{ContainerID: id, IfName: "eth0"}}
}

// addrs renders a result's addresses as "ip/len".
func addrs(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

func ips(ss ...string) []net.IP {
	var out []net.IP
	for _, s := range ss {
		out = append(out, net.ParseIP(s))
	}
	return out
}

// netDir is the store of net1 under dataDir.
func netDir(dataDir string) string { return filepath.Join(dataDir, testNet) }

// listDir returns the sorted file names of dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// errCode is the CNI code of err, 0 when err is nil and 1000 when err
// carries no *types.Error.
func errCode(err error) uint {
	if err == nil {
		return 0
	}
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 1000
}
