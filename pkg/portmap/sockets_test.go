package portmap

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/nsnet/nsnet/pkg/nat"
)

func TestParseProcNet(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hdr := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	write("tcp", hdr+
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n"+
		"   1: 0100007F:0050 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n")
	write("tcp6", hdr+
		"   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n")
	write("udp", hdr+
		"   0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0\n")
	socks, err := boundSockets(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []hostSocket{
		{"tcp", net.ParseIP("127.0.0.1").To4(), 8080},
		{"tcp", net.IPv6unspecified, 22},
		{"udp", net.IPv4zero.To4(), 53},
	}
	if len(socks) != len(want) {
		t.Fatalf("sockets = %+v, want %+v", socks, want)
	}
	for i := range want {
		if socks[i].Proto != want[i].Proto || !socks[i].IP.Equal(want[i].IP) || socks[i].Port != want[i].Port {
			t.Errorf("socket %d = %+v, want %+v", i, socks[i], want[i])
		}
	}

	v4 := net.ParseIP("10.1.0.5").To4()
	v6 := net.ParseIP("fd00::5")
	tests := []struct {
		name string
		m    nat.PortMapping
		want bool
	}{
		{"any host IP captures 127.0.0.1:8080", nat.PortMapping{Protocol: "tcp", HostPort: 8080, ContainerIP: v4}, true},
		{"other host IP does not", nat.PortMapping{Protocol: "tcp", HostPort: 8080, HostIP: net.ParseIP("10.97.0.1").To4(), ContainerIP: v4}, false},
		{"same host IP does", nat.PortMapping{Protocol: "tcp", HostPort: 8080, HostIP: net.ParseIP("127.0.0.1").To4(), ContainerIP: v4}, true},
		{"udp is another port space", nat.PortMapping{Protocol: "udp", HostPort: 8080, ContainerIP: v4}, false},
		{"[::]:22 is dual-stack", nat.PortMapping{Protocol: "tcp", HostPort: 22, ContainerIP: v4}, true},
		{"0.0.0.0:53 is not IPv6", nat.PortMapping{Protocol: "udp", HostPort: 53, ContainerIP: v6}, false},
		{"0.0.0.0:53 is IPv4", nat.PortMapping{Protocol: "udp", HostPort: 53, ContainerIP: v4}, true},
		{"free port", nat.PortMapping{Protocol: "tcp", HostPort: 9999, ContainerIP: v4}, false},
	}
	for _, tt := range tests {
		if got := socketConflict(socks, tt.m) != nil; got != tt.want {
			t.Errorf("%s: conflict = %v, want %v", tt.name, got, tt.want)
		}
	}
}
