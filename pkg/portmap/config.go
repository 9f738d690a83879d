package portmap

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsnet/nsnet/pkg/cniutil"
)

// DefaultStateDir holds the per-attachment records.
const DefaultStateDir = "/var/lib/cni/portmap-lite"

// maxRange bounds a port range: each port is one map element.
const maxRange = 1024

// Conf is the plugin configuration.
type Conf struct {
	types.NetConf
	// Backend is "nftables" (default when available) or "iptables".
	Backend  string `json:"backend"`
	StateDir string `json:"stateDir"`
	// ConntrackFlush turns off the UDP conntrack flush when false.
	ConntrackFlush *bool `json:"conntrackFlush,omitempty"`

	RuntimeConfig struct {
		PortMaps []Mapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// Mapping is one runtimeConfig.portMappings entry. encoding/json matches
// keys case-insensitively, so containerd CRI's "HostPort", "ContainerPort",
// "Protocol" and "HostIP" decode too. Range (as podman sends it) publishes
// Range consecutive ports starting at HostPort and ContainerPort.
type Mapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
	Range         int    `json:"range,omitempty"`
}

// LoadConf parses and validates stdin.
func LoadConf(stdin []byte) (*Conf, error) {
	c := &Conf{StateDir: DefaultStateDir}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decoding network config: %v", err), "")
	}
	if c.Name == "" {
		return nil, cniutil.ConfigError("network name is missing")
	}
	switch c.Backend {
	case "", "nftables", "iptables":
	default:
		return nil, cniutil.ConfigError("invalid backend %q: want \"nftables\" or \"iptables\"", c.Backend)
	}
	if !strings.HasPrefix(c.StateDir, "/") {
		return nil, cniutil.ConfigError("invalid stateDir %q: want an absolute path", c.StateDir)
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decoding prevResult: %v", err), "")
		}
	}
	return c, nil
}

// checkMappings validates and normalises runtimeConfig.portMappings. Only
// ADD needs them: DEL and GC work from the record, and must not fail on
// mappings a runtime resends unchanged from a failed ADD.
func (c *Conf) checkMappings() error {
	for i := range c.RuntimeConfig.PortMaps {
		if err := c.RuntimeConfig.PortMaps[i].normalize(); err != nil {
			return cniutil.ConfigError("portMappings[%d]: %v", i, err)
		}
	}
	return nil
}

func (m *Mapping) normalize() error {
	m.Protocol = strings.ToLower(m.Protocol)
	if m.Protocol == "" {
		m.Protocol = "tcp"
	}
	switch m.Protocol {
	case "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("unknown protocol %q: want tcp, udp or sctp", m.Protocol)
	}
	if m.Range == 0 {
		m.Range = 1
	}
	if m.Range < 1 || m.Range > maxRange {
		return fmt.Errorf("range %d: want 1..%d ports", m.Range, maxRange)
	}
	for _, p := range []struct {
		name string
		port int
	}{{"hostPort", m.HostPort}, {"containerPort", m.ContainerPort}} {
		if p.port < 1 || p.port+m.Range-1 > 65535 {
			return fmt.Errorf("%s %d (range %d): ports must be within 1..65535", p.name, p.port, m.Range)
		}
	}
	if m.HostIP != "" {
		ip := net.ParseIP(m.HostIP)
		if ip == nil {
			return fmt.Errorf("hostIP %q is not an IP address", m.HostIP)
		}
		// IPv4 reaches 127.0.0.1 through route_localnet; IPv6 has no
		// such switch, so a mapping on ::1 could never carry traffic.
		if ip.Equal(net.IPv6loopback) {
			return fmt.Errorf("hostIP ::1 cannot be published: the kernel does not route IPv6 loopback traffic to other interfaces")
		}
	}
	return nil
}

// containerIP is an address of the container with its subnet.
type containerIP struct {
	IP     net.IP
	Subnet *net.IPNet
}

// containerIPs returns the first address of each family that the previous
// plugins put on the container interface ifName (inside a sandbox).
func containerIPs(prev *current.Result, ifName string) []containerIP {
	var v4, v6 *containerIP
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(prev.Interfaces) || prev.Interfaces[i].Name != ifName || prev.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		subnet := &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		ci := &containerIP{IP: ipc.Address.IP, Subnet: subnet}
		if ipc.Address.IP.To4() != nil {
			if v4 == nil {
				ci.IP = ci.IP.To4()
				v4 = ci
			}
		} else if v6 == nil {
			v6 = ci
		}
	}
	var out []containerIP
	for _, c := range []*containerIP{v4, v6} {
		if c != nil {
			out = append(out, *c)
		}
	}
	return out
}
