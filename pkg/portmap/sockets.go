package portmap

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/nsnet/nsnet/pkg/nat"
)

// hostSocket is a local socket bound to a port.
type hostSocket struct {
	Proto string
	IP    net.IP
	Port  int
}

// boundSockets lists the TCP sockets listening and the UDP sockets bound in
// the calling thread's netns (/proc/thread-self/net follows the thread, so
// this works on a thread switched into another netns too).
func boundSockets(procNet string) ([]hostSocket, error) {
	var out []hostSocket
	for _, f := range []struct{ file, proto, state string }{
		{"tcp", "tcp", "0A"}, {"tcp6", "tcp", "0A"},
		{"udp", "udp", "07"}, {"udp6", "udp", "07"},
	} {
		socks, err := parseProcNet(procNet+"/"+f.file, f.proto, f.state)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // IPv6 disabled
			}
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

func parseProcNet(path, proto, state string) ([]hostSocket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []hostSocket
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != state {
			continue
		}
		ip, port, err := parseHexAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		out = append(out, hostSocket{Proto: proto, IP: ip, Port: port})
	}
	return out, sc.Err()
}

// parseHexAddr decodes /proc/net's "0100007F:1F90": the address is in
// host byte order per 32-bit word (little-endian on the machines we run on).
func parseHexAddr(s string) (net.IP, int, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return nil, 0, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad port in %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return nil, 0, fmt.Errorf("bad address %q", s)
	}
	ip := make(net.IP, len(raw))
	for w := 0; w < len(raw); w += 4 {
		for i := 0; i < 4; i++ {
			ip[w+i] = raw[w+3-i]
		}
	}
	return ip, int(port), nil
}

// socketConflict returns the host socket that already serves the host
// port of m, if any: one bound to the same port and protocol on an address
// our DNAT would capture.
func socketConflict(socks []hostSocket, m nat.PortMapping) *hostSocket {
	for i, s := range socks {
		if s.Proto != m.Protocol || s.Port != m.HostPort {
			continue
		}
		sv4, mv4 := s.IP.To4() != nil, m.ContainerIP.To4() != nil
		// A socket on [::] is dual-stack by default and serves IPv4 too.
		if sv4 != mv4 && !(s.IP.IsUnspecified() && !sv4) {
			continue
		}
		if m.HostIP == nil || s.IP.IsUnspecified() || s.IP.Equal(m.HostIP) {
			return &socks[i]
		}
	}
	return nil
}
