package portmap

import (
	"fmt"
	"net"

	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
)

// record is what ADD published for one attachment; see package state.
type record struct {
	// Network is the network name at ADD time, for GC after a rename.
	Network  string          `json:"network"`
	Backend  string          `json:"backend,omitempty"`
	Mappings []mappingRecord `json:"mappings"`
	// Complete is set once ADD returned success.
	Complete bool `json:"complete"`
}

type mappingRecord struct {
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int    `json:"hostPort"`
	ContainerIP   string `json:"containerIP"`
	ContainerPort int    `json:"containerPort"`
	Subnet        string `json:"subnet"`
}

func readRecord(st *state.Store, containerID, ifName string) (*record, error) {
	var r record
	if err := st.Read(containerID, ifName, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func toRecord(ms []nat.PortMapping) []mappingRecord {
	out := make([]mappingRecord, 0, len(ms))
	for _, m := range ms {
		mr := mappingRecord{
			Protocol:      m.Protocol,
			HostPort:      m.HostPort,
			ContainerIP:   m.ContainerIP.String(),
			ContainerPort: m.ContainerPort,
			Subnet:        m.ContainerSubnet.String(),
		}
		if m.HostIP != nil {
			mr.HostIP = m.HostIP.String()
		}
		out = append(out, mr)
	}
	return out
}

func (r *record) natMappings() ([]nat.PortMapping, error) {
	out := make([]nat.PortMapping, 0, len(r.Mappings))
	for _, mr := range r.Mappings {
		_, subnet, err := net.ParseCIDR(mr.Subnet)
		ip := net.ParseIP(mr.ContainerIP)
		if err != nil || ip == nil {
			return nil, fmt.Errorf("corrupt mapping %+v in state", mr)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		m := nat.PortMapping{
			Protocol:        mr.Protocol,
			HostPort:        mr.HostPort,
			ContainerIP:     ip,
			ContainerPort:   mr.ContainerPort,
			ContainerSubnet: subnet,
		}
		if mr.HostIP != "" {
			if m.HostIP = net.ParseIP(mr.HostIP); m.HostIP == nil {
				return nil, fmt.Errorf("corrupt mapping %+v in state", mr)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// expand turns the runtime's mappings into one nat mapping per port and
// container address of the matching family. A hostIP of the other family
// is skipped, not an error: dual-stack runtimes send each mapping once.
func expand(ms []Mapping, ips []containerIP) []nat.PortMapping {
	var out []nat.PortMapping
	for _, m := range ms {
		hostIP := net.ParseIP(m.HostIP)
		if hostIP != nil && hostIP.IsUnspecified() {
			hostIP = nil
		}
		for _, cip := range ips {
			v4 := cip.IP.To4() != nil
			if hostIP != nil && (hostIP.To4() != nil) != v4 {
				continue
			}
			hip := hostIP
			if hip != nil && v4 {
				hip = hip.To4()
			}
			for k := 0; k < m.Range; k++ {
				out = append(out, nat.PortMapping{
					Protocol:        m.Protocol,
					HostIP:          hip,
					HostPort:        m.HostPort + k,
					ContainerIP:     cip.IP,
					ContainerPort:   m.ContainerPort + k,
					ContainerSubnet: cip.Subnet,
				})
			}
		}
	}
	return out
}
