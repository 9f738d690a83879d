package bridgelite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/nsnet/nsnet/pkg/ipam"
	"github.com/nsnet/nsnet/pkg/state"
)

// GC is the CNI GC verb: it removes every attachment of this network that
// is not in the runtime's list of valid attachments.
func GC(args *skel.CmdArgs) error {
	return cniError(gc(context.Background(), args))
}

func gc(ctx context.Context, args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	valid, known, err := ipam.ParseValidAttachments(args.StdinData)
	if err != nil {
		return err
	}
	// Without the list we cannot tell stale from live; freeing nothing is
	// the only safe reading. A delegated IPAM plugin still gets the GC, as
	// the spec requires, and decides for itself.
	if !known {
		if c.IPAM.Type == "" || c.IPAM.Type == "host-local" {
			return nil
		}
		drv, err := ipam.Load(args.StdinData)
		if err != nil {
			return err
		}
		return drv.GC(ctx, ipam.Request{Stdin: args.StdinData, Network: c.Name}, nil)
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	errs := []error{st.Sweep(ipam.Keeps(valid), func(e state.Entry) error {
		var rec record
		if err := json.Unmarshal(e.Data, &rec); err != nil {
			return fmt.Errorf("decoding record of %s/%s: %w", e.ContainerID, e.IfName, err)
		}
		if rec.Network != c.Name {
			return nil
		}
		recArgs := &skel.CmdArgs{ContainerID: rec.ContainerID, IfName: rec.IfName, Netns: rec.NetNS, StdinData: args.StdinData, Path: args.Path}
		return teardown(ctx, st, &rec, recArgs)
	})}
	if c.IPAM.Type != "" {
		drv, err := ipam.Load(args.StdinData)
		if err == nil {
			err = drv.GC(ctx, ipam.Request{Stdin: args.StdinData, Network: c.Name}, valid)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("garbage-collecting %s IPAM: %w", c.IPAM.Type, err))
		}
	}
	return errors.Join(errs...)
}
