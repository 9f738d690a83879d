package ipam

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// execDriver runs an IPAM plugin binary found through CNI_PATH. The
// container fields come from the Request, not from this process's
// environment, so the delegate sees what the Driver caller asked for; the
// rest of the environment is inherited as the spec requires.
type execDriver struct {
	plugin string
	exec   invoke.Exec // nil: invoke's default
}

var _ Driver = (*execDriver)(nil)

func (d *execDriver) prepare(verb string, r Request) (string, []byte, *invoke.Args, error) {
	stdin, err := withNetworkName(r.Stdin, r.Network)
	if err != nil {
		return "", nil, nil, err
	}
	cniPath := os.Getenv("CNI_PATH")
	paths := filepath.SplitList(cniPath)
	var path string
	if d.exec != nil {
		path, err = d.exec.FindInPath(d.plugin, paths)
	} else {
		path, err = invoke.FindInPath(d.plugin, paths)
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("finding IPAM plugin %q in CNI_PATH: %w", d.plugin, err)
	}
	args := &invoke.Args{
		Command:       verb,
		ContainerID:   r.ContainerID,
		NetNS:         r.NetNS,
		IfName:        r.IfName,
		PluginArgsStr: r.Args,
		Path:          cniPath,
	}
	return path, stdin, args, nil
}

func (d *execDriver) run(ctx context.Context, verb string, r Request) error {
	path, stdin, args, err := d.prepare(verb, r)
	if err != nil {
		return err
	}
	if err := invoke.ExecPluginWithoutResult(ctx, path, stdin, args, d.exec); err != nil {
		return fmt.Errorf("IPAM plugin %s %s: %w", d.plugin, verb, err)
	}
	return nil
}

func (d *execDriver) Add(ctx context.Context, r Request) (*current.Result, error) {
	path, stdin, args, err := d.prepare("ADD", r)
	if err != nil {
		return nil, err
	}
	raw, err := invoke.ExecPluginWithResult(ctx, path, stdin, args, d.exec)
	if err != nil {
		return nil, fmt.Errorf("IPAM plugin %s ADD: %w", d.plugin, err)
	}
	res, err := current.NewResultFromResult(raw)
	if err != nil {
		return nil, fmt.Errorf("converting result of IPAM plugin %s: %w", d.plugin, err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, decodeError("network config", err)
	}
	res.CNIVersion = resultVersion(conf.CNIVersion)
	for _, ip := range res.IPs {
		ip.Interface = nil
	}
	return res, nil
}

// Del hands the ADD-time network name to the delegate so that it finds the
// store it reserved in.
func (d *execDriver) Del(ctx context.Context, r Request, _ []net.IP) error {
	return d.run(ctx, "DEL", r)
}

// Check leaves verification to the delegate, which reads prevResult from Stdin.
func (d *execDriver) Check(ctx context.Context, r Request, _ []net.IP) error {
	return d.run(ctx, "CHECK", r)
}

// GC passes Stdin through; the delegate reads the valid attachments from it.
func (d *execDriver) GC(ctx context.Context, r Request, _ []Attachment) error {
	return d.run(ctx, "GC", r)
}

func (d *execDriver) Status(ctx context.Context, r Request) error {
	return d.run(ctx, "STATUS", r)
}

// withNetworkName sets stdin's "name" to network when they differ.
func withNetworkName(stdin []byte, network string) ([]byte, error) {
	if network == "" {
		return stdin, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &m); err != nil {
		return nil, decodeError("network config", err)
	}
	if m == nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not a JSON object", "")
	}
	var cur string
	if raw, ok := m["name"]; ok && json.Unmarshal(raw, &cur) == nil && cur == network {
		return stdin, nil
	}
	name, err := json.Marshal(network)
	if err != nil {
		return nil, fmt.Errorf("encoding network name: %w", err)
	}
	m["name"] = name
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding network config: %w", err)
	}
	return out, nil
}
