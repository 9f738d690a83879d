package bridgelite

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsnet/nsnet/pkg/cniutil"
	"github.com/nsnet/nsnet/pkg/netnsconf"
)

// DefaultStateDir holds the per-attachment records. It is on disk, not
// tmpfs, so that GC after a reboot can still release IP reservations that
// host-local keeps in /var/lib/cni/networks.
const DefaultStateDir = "/var/lib/cni/bridge-lite"

// Conf is the network configuration: the reference bridge plugin's keys,
// so a user changes only "type", plus a few of our own.
type Conf struct {
	types.NetConf
	Bridge              string  `json:"bridge"`
	IsGateway           bool    `json:"isGateway"`
	IsDefaultGateway    bool    `json:"isDefaultGateway"`
	ForceAddress        bool    `json:"forceAddress"`
	IPMasq              bool    `json:"ipMasq"`
	IPMasqBackend       *string `json:"ipMasqBackend,omitempty"`
	MTU                 int     `json:"mtu"`
	HairpinMode         bool    `json:"hairpinMode"`
	PromiscMode         bool    `json:"promiscMode"`
	Vlan                int     `json:"vlan"`
	PreserveDefaultVlan bool    `json:"preserveDefaultVlan"`
	MacSpoofChk         bool    `json:"macspoofchk"`
	EnableDad           bool    `json:"enabledad"`
	PortIsolation       bool    `json:"portIsolation"`
	// VlanTrunk is the reference plugin's trunk-port list, which
	// bridge-lite does not implement; it is decoded only to be refused.
	VlanTrunk json.RawMessage `json:"vlanTrunk,omitempty"`
	Args      struct {
		Cni struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni"`
	} `json:"args,omitempty"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// StateDir is where per-attachment records live (our extension).
	StateDir string `json:"stateDir"`
	// PerNetnsResolvConf says whether ADD into a named netns writes
	// <NetnsConfDir>/<name>/resolv.conf for `ip netns exec`: true (the
	// default) when DNS is known, "host" falling back to the host's
	// resolv.conf, false never. Decoded by validate into resolvConf.
	PerNetnsResolvConf json.RawMessage `json:"perNetnsResolvConf,omitempty"`
	// NetnsConfDir replaces /etc/netns, mainly so tests leave it alone.
	NetnsConfDir string `json:"netnsConfDir"`

	// mac is the container MAC chosen from runtimeConfig, args and CNI_ARGS.
	mac        net.HardwareAddr
	resolvConf resolvConfMode
}

// resolvConfMode is the decoded perNetnsResolvConf.
type resolvConfMode int

const (
	resolvConfKnown resolvConfMode = iota
	resolvConfOff
	resolvConfHost
)

func parseResolvConfMode(raw json.RawMessage) (resolvConfMode, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return resolvConfKnown, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		if b {
			return resolvConfKnown, nil
		}
		return resolvConfOff, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s == "host" {
		return resolvConfHost, nil
	}
	return 0, configError("invalid perNetnsResolvConf %s: want true, false or \"host\"", raw)
}

var configError = cniutil.ConfigError

// LoadConf parses and validates stdin, applies defaults, and picks the
// container MAC. envArgs is CNI_ARGS.
func LoadConf(stdin []byte, envArgs string) (*Conf, error) {
	c := &Conf{Bridge: "cni0", StateDir: DefaultStateDir, NetnsConfDir: netnsconf.DefaultDir}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decoding network config: %v", err), "")
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.IsDefaultGateway {
		c.IsGateway = true
	}
	kv, err := parseEnvArgs(envArgs)
	if err != nil {
		return nil, err
	}
	// Precedence as in the reference plugin: runtimeConfig, then args,
	// then the deprecated CNI_ARGS.
	for _, m := range []struct{ src, val string }{
		{"runtimeConfig.mac", c.RuntimeConfig.Mac},
		{"args.cni.mac", c.Args.Cni.Mac},
		{"CNI_ARGS MAC", kv["MAC"]},
	} {
		if m.val == "" {
			continue
		}
		mac, err := net.ParseMAC(m.val)
		if err != nil || len(mac) != 6 {
			return nil, configError("invalid %s %q: want an Ethernet MAC like 02:42:ac:11:00:02", m.src, m.val)
		}
		if mac[0]&1 == 1 {
			return nil, configError("invalid %s %q: a multicast address cannot be an interface MAC", m.src, m.val)
		}
		c.mac = mac
		break
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decoding prevResult: %v", err), "")
		}
	}
	return c, nil
}

func (c *Conf) validate() error {
	if c.Name == "" {
		return configError("network name is missing")
	}
	if err := validIfName(c.Bridge); err != nil {
		return configError("invalid bridge name %q: %v", c.Bridge, err)
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return configError("invalid mtu %d: want 68..65535 (or leave it out to use the uplink's)", c.MTU)
	}
	if c.Vlan < 0 || c.Vlan > 4094 {
		return configError("invalid vlan %d: want 0..4094", c.Vlan)
	}
	if c.HairpinMode && c.PromiscMode {
		return configError("hairpinMode and promiscMode cannot both be set")
	}
	if c.IPMasqBackend != nil {
		switch *c.IPMasqBackend {
		case "nftables", "iptables":
		default:
			return configError("invalid ipMasqBackend %q: want \"nftables\" or \"iptables\"", *c.IPMasqBackend)
		}
	}
	if c.StateDir == "" || !strings.HasPrefix(c.StateDir, "/") {
		return configError("invalid stateDir %q: want an absolute path", c.StateDir)
	}
	mode, err := parseResolvConfMode(c.PerNetnsResolvConf)
	if err != nil {
		return err
	}
	c.resolvConf = mode
	if !strings.HasPrefix(c.NetnsConfDir, "/") {
		return configError("invalid netnsConfDir %q: want an absolute path", c.NetnsConfDir)
	}
	if len(c.VlanTrunk) > 0 && string(c.VlanTrunk) != "null" {
		return types.NewError(types.ErrUnsupportedField, fmt.Sprintf("unsupported field vlanTrunk=%s: trunk ports are not implemented", c.VlanTrunk), "")
	}
	if c.Vlan != 0 && c.IsGateway {
		return configError("vlan together with isGateway is not supported: give the gateway to a router on the VLAN")
	}
	return nil
}

func validIfName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("empty")
	case len(n) > 15:
		return fmt.Errorf("longer than 15 bytes")
	case n == "." || n == "..":
		return fmt.Errorf("reserved name")
	case strings.ContainsAny(n, "/: \t\n"):
		return fmt.Errorf("contains '/', ':' or whitespace")
	}
	return nil
}

// parseEnvArgs reads CNI_ARGS (K=V;K=V). Unknown keys are ignored: runtimes
// put their own keys there (K8S_POD_NAME, ...), and refusing them only hurts
// users.
func parseEnvArgs(s string) (map[string]string, error) {
	kv := map[string]string{}
	if s == "" {
		return kv, nil
	}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("invalid CNI_ARGS pair %q: want KEY=VALUE", pair), "")
		}
		kv[k] = v
	}
	return kv, nil
}

// prevResult returns the config's prevResult as the current result type,
// or nil when there is none.
func (c *Conf) prevResult() (*current.Result, error) {
	if c.PrevResult == nil {
		return nil, nil
	}
	r, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("converting prevResult: %v", err), "")
	}
	return r, nil
}
