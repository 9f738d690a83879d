package portmap

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
)

// Status is the CNI STATUS verb: code 50 when ports cannot be published now.
func Status(args *skel.CmdArgs) error {
	return cniError(status(args))
}

func status(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	st, err := state.Open(c.StateDir)
	if err == nil {
		err = unix.Access(st.Dir(), unix.W_OK)
	}
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("state dir %s unusable: %v", c.StateDir, err), "")
	}
	if err := nat.Available(c.Backend); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("%s backend unavailable: %v", c.Backend, err), "")
	}
	return nil
}
