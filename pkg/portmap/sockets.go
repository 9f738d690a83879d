package portmap

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/nat"
)

// portHolder reports whether a socket of the calling thread's netns already
// serves the host port of m, by trying to bind the port the way a server
// would, without listening. Reading /proc/net/{tcp,udp} instead walks the
// kernel's socket hash tables of every namespace and costs ~10 ms per ADD.
//
// TCP binds with SO_REUSEADDR, so only a listener (or a socket bound without
// SO_REUSEADDR) conflicts, not connections in TIME_WAIT; UDP binds without
// it, so any bound socket conflicts. An IPv6 wildcard probe is IPv6-only:
// a dual-stack [::] server conflicts with both families anyway. SCTP is not
// probed.
func portHolder(m nat.PortMapping) (string, error) {
	var typ, proto int
	switch m.Protocol {
	case "tcp":
		typ, proto = unix.SOCK_STREAM, unix.IPPROTO_TCP
	case "udp":
		typ, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	default:
		return "", nil
	}
	v6 := m.ContainerIP.To4() == nil
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return "", fmt.Errorf("probing host port %d/%s: %w", m.HostPort, m.Protocol, err)
	}
	defer unix.Close(fd)
	if typ == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return "", fmt.Errorf("probing host port %d/%s: %w", m.HostPort, m.Protocol, err)
		}
	}
	var sa unix.Sockaddr
	addr := "0.0.0.0"
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			return "", fmt.Errorf("probing host port %d/%s: %w", m.HostPort, m.Protocol, err)
		}
		s := &unix.SockaddrInet6{Port: m.HostPort}
		addr = "::"
		if m.HostIP != nil {
			copy(s.Addr[:], m.HostIP.To16())
			addr = m.HostIP.String()
		}
		sa = s
	} else {
		s := &unix.SockaddrInet4{Port: m.HostPort}
		if m.HostIP != nil {
			copy(s.Addr[:], m.HostIP.To4())
			addr = m.HostIP.String()
		}
		sa = s
	}
	err = unix.Bind(fd, sa)
	switch {
	case err == nil:
		return "", nil
	case errors.Is(err, unix.EADDRINUSE):
		return net.JoinHostPort(addr, fmt.Sprint(m.HostPort)), nil
	case errors.Is(err, unix.EADDRNOTAVAIL):
		// The host IP is not local: no host socket can hold it, and the
		// mapping only matters once the address is added.
		return "", nil
	default:
		return "", fmt.Errorf("probing host port %d/%s: %w", m.HostPort, m.Protocol, err)
	}
}
