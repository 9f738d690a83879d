package cninet

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// maxPublishRange bounds one publish range: each port is a mapping, and
// portmap plugins add a rule or map element per mapping.
const maxPublishRange = 1024

// PortMapping is one runtimeConfig.portMappings entry, the shape the
// portMappings capability defines.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// ParsePublish parses a publish flag, "[hostIP:]hostPort:containerPort[/proto]",
// where both ports may be equally long ranges ("8000-8010:80-90") and an
// IPv6 host IP may be bracketed ("[fd00::1]:8080:80"). proto is tcp (the
// default), udp or sctp. A range becomes one mapping per port, which every
// portmap plugin understands.
func ParsePublish(spec string) ([]PortMapping, error) {
	fail := func(format string, a ...any) ([]PortMapping, error) {
		return nil, fmt.Errorf("publish %q: %s; want [hostIP:]hostPort:containerPort[/tcp|udp|sctp]", spec, fmt.Sprintf(format, a...))
	}
	rest, proto, hasProto := strings.Cut(spec, "/")
	proto = strings.ToLower(proto)
	switch {
	case !hasProto:
		proto = "tcp"
	case proto == "tcp" || proto == "udp" || proto == "sctp":
	default:
		return fail("unknown protocol %q", proto)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return fail("no host port")
	}
	rest, ctrPart := rest[:i], rest[i+1:]
	hostIP, hostPart := "", rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		hostIP, hostPart = rest[:i], rest[i+1:]
		if hostIP == "" {
			return fail("empty host IP")
		}
		addr, err := ParseHostIP(hostIP)
		if err != nil {
			return fail("host IP %v", err)
		}
		hostIP = addr.Unmap().String()
	}
	hostLo, hostHi, err := parsePortRange(hostPart)
	if err != nil {
		return fail("host port: %v", err)
	}
	ctrLo, ctrHi, err := parsePortRange(ctrPart)
	if err != nil {
		return fail("container port: %v", err)
	}
	n := hostHi - hostLo + 1
	if ctrHi-ctrLo+1 != n {
		return fail("host range has %d ports but container range has %d", n, ctrHi-ctrLo+1)
	}
	if n > maxPublishRange {
		return fail("range of %d ports: at most %d", n, maxPublishRange)
	}
	out := make([]PortMapping, 0, n)
	for k := range n {
		out = append(out, PortMapping{HostPort: hostLo + k, ContainerPort: ctrLo + k, Protocol: proto, HostIP: hostIP})
	}
	return out, nil
}

// ParseHostIP parses an IP address given on nsnet's command line (-p,
// --add-host): an IPv6 address may be bracketed ("[fd00::1]"), as in URLs,
// and a zone is refused, as neither a port mapping nor a resolver reading
// /etc/hosts (inet_pton) can use one.
func ParseHostIP(s string) (netip.Addr, error) {
	text, bracketed := strings.CutPrefix(s, "[")
	if bracketed {
		if text, bracketed = strings.CutSuffix(text, "]"); !bracketed {
			return netip.Addr{}, fmt.Errorf("%q lacks its closing bracket", s)
		}
	}
	addr, err := netip.ParseAddr(text)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	case bracketed && !addr.Is6():
		return netip.Addr{}, fmt.Errorf("%q: only an IPv6 address is bracketed", s)
	case addr.Zone() != "":
		return netip.Addr{}, fmt.Errorf("%q: an address with a zone cannot be used here", s)
	}
	return addr, nil
}

func parsePortRange(s string) (lo, hi int, err error) {
	loS, hiS, isRange := strings.Cut(s, "-")
	if lo, err = parsePort(loS); err != nil {
		return 0, 0, err
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = parsePort(hiS); err != nil {
		return 0, 0, err
	}
	if hi < lo {
		return 0, 0, fmt.Errorf("range %s ends before it starts", s)
	}
	return lo, hi, nil
}

func parsePort(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing port")
	}
	p, err := strconv.Atoi(s)
	if err != nil || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %d is outside 1-65535", p)
	}
	return p, nil
}
