package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Attachment names one container interface.
type Attachment struct{ ContainerID, IfName string }

// Request carries what every verb needs.
type Request struct {
	// Stdin is the full network config as the plugin received it.
	Stdin []byte
	// Network names the store to use. The plugin keeps the ADD-time name so a
	// renamed network still finds its reservations; "" means Stdin's "name".
	Network string
	Attachment
	// Args is CNI_ARGS (K=V;K=V); host-local reads IP=, unknown keys are ignored.
	Args  string
	NetNS string
}

// Driver is one IPAM implementation.
type Driver interface {
	// Add reserves the attachment's addresses and returns them with routes
	// and DNS. ips[].interface is left nil for the caller to fill.
	Add(ctx context.Context, r Request) (*current.Result, error)
	// Del releases the attachment's reservations. hint holds the IPs recorded
	// at ADD (may be nil); with a hint only those files are examined, without
	// one the network directory is scanned. Already released is not an error.
	Del(ctx context.Context, r Request, hint []net.IP) error
	// Check verifies that each of ips is reserved for this attachment.
	Check(ctx context.Context, r Request, ips []net.IP) error
	// GC releases every reservation of this network whose attachment is not
	// in valid.
	GC(ctx context.Context, r Request, valid []Attachment) error
	// Status returns nil when ADD can be served, else a *types.Error with
	// code types.ErrPluginNotAvailable.
	Status(ctx context.Context, r Request) error
}

const (
	hostLocalType      = "host-local"
	defaultLockTimeout = 10 * time.Second
)

// Load returns the driver for stdin's ipam.type: in-process host-local, or an
// exec delegate for anything else. Only the type is validated here; each verb
// reads the rest of the config itself so that DEL and GC keep working when
// the ranges have since become invalid.
func Load(stdin []byte) (Driver, error) {
	var conf struct {
		IPAM *struct {
			Type string `json:"type"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, decodeError("network config", err)
	}
	if conf.IPAM == nil {
		return nil, configError(`network config has no "ipam" section`)
	}
	switch t := conf.IPAM.Type; {
	case t == "":
		return nil, configError(`"ipam" section has no "type"`)
	case t == hostLocalType:
		return &hostLocal{lockTimeout: defaultLockTimeout}, nil
	case strings.ContainsAny(t, `/\`) || t == "." || t == "..":
		return nil, configError(fmt.Sprintf("ipam type %q is not a plugin name", t))
	default:
		return &execDriver{plugin: t}, nil
	}
}

func configError(msg string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}

func decodeError(what string, err error) *types.Error {
	return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("decoding %s: %v", what, err), "")
}

// networkName picks the store name and refuses names that would escape the
// data directory.
func networkName(r Request, stdinName string) (string, error) {
	name := r.Network
	if name == "" {
		name = stdinName
	}
	switch {
	case name == "":
		return "", configError(`network config has no "name"`)
	case name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return "", configError(fmt.Sprintf("network name %q cannot name a directory", name))
	}
	return name, nil
}

// resultVersion keeps the config's version when a current.Result can carry it.
func resultVersion(confVersion string) string {
	if confVersion == "1.0.0" {
		return confVersion
	}
	return current.ImplementedSpecVersion
}
