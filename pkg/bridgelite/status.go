package bridgelite

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/ipam"
	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
)

// Status is the CNI STATUS verb: it succeeds when an ADD could be served
// now and otherwise says why, with code 50.
func Status(args *skel.CmdArgs) error {
	return cniError(status(context.Background(), args))
}

func unavailable(format string, a ...any) error {
	return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf(format, a...), "")
}

func status(ctx context.Context, args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return unavailable("state dir unusable: %v", err)
	}
	if err := unix.Access(st.Dir(), unix.W_OK); err != nil {
		return unavailable("state dir %s is not writable: %v", st.Dir(), err)
	}
	if c.IPMasq {
		if err := nat.Available(masqBackend(c)); err != nil {
			return unavailable("masquerade backend unavailable: %v", err)
		}
	}
	if c.IPAM.Type != "" {
		drv, err := ipam.Load(args.StdinData)
		if err != nil {
			return err
		}
		return drv.Status(ctx, ipam.Request{Stdin: args.StdinData, Network: c.Name})
	}
	return nil
}
