package portmap

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
)

// Del is the CNI DEL verb. It needs nothing but the container ID and
// interface name: the mappings to withdraw come from the record, not from
// runtimeConfig (which runtimes often do not resend) or prevResult.
func Del(args *skel.CmdArgs) error {
	return cniError(del(args))
}

func del(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	rec, err := readRecord(st, args.ContainerID, args.IfName)
	if errors.Is(err, fs.ErrNotExist) {
		// Nothing was published, but an ADD killed in its first write
		// may have left a temp file.
		return st.Remove(args.ContainerID, args.IfName)
	}
	if err != nil {
		return err
	}
	return teardown(st, args.ContainerID, args.IfName, rec)
}

// teardown withdraws the record's mappings, flushes their UDP flows and
// removes the record; the record stays if withdrawing failed, so a retry
// can finish.
func teardown(st *state.Store, containerID, ifName string, rec *record) error {
	ms, err := rec.natMappings()
	if err != nil {
		return err
	}
	if len(ms) > 0 {
		pm, err := nat.NewPortMapper(rec.Backend)
		if err != nil {
			return err
		}
		if err := withdraw(st, pm, ms); err != nil {
			return fmt.Errorf("withdrawing ports of %s/%s: %w", containerID, ifName, err)
		}
		// A client still sending to the port must not keep reaching a
		// conntrack entry that points at the gone container.
		if err := flushUDP(ms); err != nil {
			return err
		}
	}
	return st.Remove(containerID, ifName)
}
