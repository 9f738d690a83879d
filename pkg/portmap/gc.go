package portmap

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/nsnet/nsnet/pkg/ipam"
	"github.com/nsnet/nsnet/pkg/state"
)

// GC is the CNI GC verb: it withdraws the mappings of every attachment of
// this network missing from the runtime's valid list.
func GC(args *skel.CmdArgs) error {
	return cniError(gc(args))
}

func gc(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	valid, known, err := ipam.ParseValidAttachments(args.StdinData)
	if err != nil || !known {
		// Without the list, stale and live look alike: free nothing.
		return err
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	return st.Sweep(ipam.Keeps(valid), func(e state.Entry) error {
		var rec record
		if err := json.Unmarshal(e.Data, &rec); err != nil {
			return fmt.Errorf("decoding record of %s/%s: %w", e.ContainerID, e.IfName, err)
		}
		if rec.Network != c.Name {
			return nil
		}
		return teardown(st, e.ContainerID, e.IfName, &rec)
	})
}
