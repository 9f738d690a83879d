package bridgelite

import (
	"encoding/json"

	"github.com/nsnet/nsnet/pkg/netnsconf"
	"github.com/nsnet/nsnet/pkg/state"
)

// masqRecord is one masquerade entry made for an attachment.
type masqRecord struct {
	Subnet string `json:"subnet"`
	IP     string `json:"ip"`
}

// record describes what ADD made for one attachment; see package state.
type record struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// Network is the network name at ADD time; IPAM stores and NAT
	// structures are keyed by it, so it outlives a rename of the config.
	Network  string `json:"network"`
	NetNS    string `json:"netns,omitempty"`
	Bridge   string `json:"bridge,omitempty"`
	HostVeth string `json:"hostVeth,omitempty"`
	// MacSpoof says a MAC-spoofing guard may exist for HostVeth, so that
	// DEL touches nftables for it only then.
	MacSpoof bool   `json:"macSpoof,omitempty"`
	IPAMType string `json:"ipamType,omitempty"`
	// IPAMConf is the ADD-time network config, kept so that DEL and GC can
	// call a delegated IPAM plugin with what it saw at ADD.
	IPAMConf    json.RawMessage `json:"ipamConf,omitempty"`
	IPs         []string        `json:"ips,omitempty"`
	MasqBackend string          `json:"masqBackend,omitempty"`
	Masq        []masqRecord    `json:"masq,omitempty"`
	// ResolvConf is the per-netns resolv.conf, named before it is written.
	ResolvConf *netnsconf.File `json:"resolvConf,omitempty"`
	// Complete is set once ADD returned success; a record without it
	// belongs to an ADD that failed or was killed.
	Complete bool `json:"complete"`
}

// readRecord returns an attachment's record; the error wraps
// fs.ErrNotExist when there is none.
func readRecord(st *state.Store, containerID, ifName string) (*record, error) {
	var r record
	if err := st.Read(containerID, ifName, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
