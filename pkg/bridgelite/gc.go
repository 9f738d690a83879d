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
	// the only safe reading.
	if !known {
		return nil
	}
	keep := map[ipam.Attachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	recs, listErr := st.List()
	var errs []error
	if listErr != nil {
		errs = append(errs, listErr)
	}
	for _, e := range recs {
		if keep[ipam.Attachment{ContainerID: e.ContainerID, IfName: e.IfName}] {
			continue
		}
		if e.Data == nil {
			if err := st.Remove(e.ContainerID, e.IfName); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		var rec record
		if err := json.Unmarshal(e.Data, &rec); err != nil {
			errs = append(errs, fmt.Errorf("decoding record of %s/%s: %w", e.ContainerID, e.IfName, err))
			continue
		}
		if rec.Network != c.Name {
			continue
		}
		recArgs := &skel.CmdArgs{ContainerID: rec.ContainerID, IfName: rec.IfName, Netns: rec.NetNS, StdinData: args.StdinData, Path: args.Path}
		if err := teardown(ctx, st, &rec, recArgs); err != nil {
			errs = append(errs, err)
		}
	}
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
