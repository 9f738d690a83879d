package portmap

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/nsnet/nsnet/pkg/cniutil"
	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
)

// Check is the CNI CHECK verb: every mapping ADD published is still there.
func Check(args *skel.CmdArgs) error {
	return cniError(check(args))
}

func check(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return cniutil.ConfigError("CHECK needs prevResult, the result of ADD")
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	rec, err := readRecord(st, args.ContainerID, args.IfName)
	if errors.Is(err, fs.ErrNotExist) {
		if len(c.RuntimeConfig.PortMaps) > 0 {
			return fmt.Errorf("no record of the port mappings of %s/%s", args.ContainerID, args.IfName)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !rec.Complete {
		return fmt.Errorf("the ADD of %s/%s did not finish", args.ContainerID, args.IfName)
	}
	ms, err := rec.natMappings()
	if err != nil || len(ms) == 0 {
		return err
	}
	pm, err := nat.NewPortMapper(rec.Backend)
	if err != nil {
		return err
	}
	return pm.Check(ms)
}
