package portmap

import (
	"net"
	"strconv"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/nsnet/nsnet/internal/testns"
	"github.com/nsnet/nsnet/pkg/nat"
)

func TestPortHolder(t *testing.T) {
	host := testns.New(t)
	err := host.Do(func(ns.NetNS) error {
		// Servers of the host: TCP on 127.0.0.1:8080, dual-stack TCP on
		// [::]:2222, UDP on 0.0.0.0:5353, and a TCP connection in
		// TIME_WAIT would not count (not set up here).
		lo, err := net.Listen("tcp4", "127.0.0.1:8080")
		if err != nil {
			return err
		}
		defer lo.Close()
		ds, err := net.Listen("tcp", "[::]:2222")
		if err != nil {
			return err
		}
		defer ds.Close()
		udp, err := net.ListenPacket("udp4", "0.0.0.0:5353")
		if err != nil {
			return err
		}
		defer udp.Close()

		v4 := net.ParseIP("10.1.0.5").To4()
		v6 := net.ParseIP("fd00::5")
		tests := []struct {
			name string
			m    nat.PortMapping
			want string
		}{
			{"any host IP captures 127.0.0.1:8080", nat.PortMapping{Protocol: "tcp", HostPort: 8080, ContainerIP: v4}, "0.0.0.0:8080"},
			{"the same host IP", nat.PortMapping{Protocol: "tcp", HostPort: 8080, HostIP: net.ParseIP("127.0.0.1").To4(), ContainerIP: v4}, "127.0.0.1:8080"},
			{"another local host IP", nat.PortMapping{Protocol: "tcp", HostPort: 8080, HostIP: net.ParseIP("127.0.0.2").To4(), ContainerIP: v4}, ""},
			{"a host IP that is not local", nat.PortMapping{Protocol: "tcp", HostPort: 8080, HostIP: net.ParseIP("192.0.2.1").To4(), ContainerIP: v4}, ""},
			{"UDP is another port space", nat.PortMapping{Protocol: "udp", HostPort: 8080, ContainerIP: v4}, ""},
			{"[::]:2222 is dual-stack (IPv4)", nat.PortMapping{Protocol: "tcp", HostPort: 2222, ContainerIP: v4}, "0.0.0.0:2222"},
			{"[::]:2222 (IPv6)", nat.PortMapping{Protocol: "tcp", HostPort: 2222, ContainerIP: v6}, "[::]:2222"},
			{"0.0.0.0:5353/udp (IPv4)", nat.PortMapping{Protocol: "udp", HostPort: 5353, ContainerIP: v4}, "0.0.0.0:5353"},
			{"0.0.0.0:5353/udp is not IPv6", nat.PortMapping{Protocol: "udp", HostPort: 5353, ContainerIP: v6}, ""},
			{"a free port", nat.PortMapping{Protocol: "tcp", HostPort: 9999, ContainerIP: v4}, ""},
			{"sctp is not probed", nat.PortMapping{Protocol: "sctp", HostPort: 8080, ContainerIP: v4}, ""},
		}
		for _, tt := range tests {
			got, err := portHolder(tt.m)
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
				continue
			}
			if got != tt.want {
				t.Errorf("%s: holder = %q, want %q", tt.name, got, tt.want)
			}
		}
		// The probe itself must not keep the port.
		l, err := net.Listen("tcp4", "0.0.0.0:"+strconv.Itoa(9999))
		if err != nil {
			t.Errorf("port 9999 still held after the probe: %v", err)
		} else {
			l.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
