package bridgelite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/nsnet/nsnet/pkg/ipam"
	"github.com/nsnet/nsnet/pkg/macspoof"
	"github.com/nsnet/nsnet/pkg/state"
	"github.com/nsnet/nsnet/pkg/veth"
)

// Check is the CNI CHECK verb: it verifies the kernel still matches the
// final ADD result and that the firewall and IPAM state ADD made are there.
func Check(args *skel.CmdArgs) error {
	return cniError(check(context.Background(), args))
}

func check(ctx context.Context, args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	prev, err := c.prevResult()
	if err != nil {
		return err
	}
	if prev == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult, the result of ADD", "")
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	rec, err := readRecord(st, args.ContainerID, args.IfName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no record of an ADD of %s/%s", args.ContainerID, args.IfName)
		}
		return err
	}
	if !rec.Complete {
		return fmt.Errorf("the ADD of %s/%s did not finish", args.ContainerID, args.IfName)
	}
	contNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer contNS.Close()

	idx := -1
	for i, intf := range prev.Interfaces {
		if intf.Name == args.IfName && intf.Sandbox == args.Netns {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("prevResult has no interface %s in %s", args.IfName, args.Netns)
	}
	if err := checkHostSide(rec); err != nil {
		return err
	}
	var ips []*current.IPConfig
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface == idx {
			ips = append(ips, ipc)
		}
	}
	if err := veth.Verify(contNS, veth.Expect{
		IfName: args.IfName,
		MAC:    prev.Interfaces[idx].Mac,
		Addrs:  addrsOf(ips),
		Routes: prev.Routes,
	}); err != nil {
		return err
	}
	if c.MacSpoofChk {
		mac, err := netMAC(prev.Interfaces[idx].Mac)
		if err != nil {
			return err
		}
		if err := macspoof.Check(rec.HostVeth, mac); err != nil {
			return err
		}
	}
	if err := masqCheck(rec); err != nil {
		return err
	}
	if err := resolvConfCheck(rec); err != nil {
		return err
	}
	if rec.IPAMType != "" {
		drv, err := ipam.Load(rec.IPAMConf)
		if err != nil {
			return err
		}
		if err := drv.Check(ctx, ipamRequest(args, rec), ipsOf(ips)); err != nil {
			return fmt.Errorf("%s IPAM: %w", rec.IPAMType, err)
		}
	}
	return nil
}

func checkHostSide(rec *record) error {
	br, err := netlinksafe.LinkByName(rec.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", rec.Bridge, err)
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("%s is a %s, not a bridge", rec.Bridge, br.Type())
	}
	hv, err := netlinksafe.LinkByName(rec.HostVeth)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", rec.HostVeth, err)
	}
	if hv.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host veth %s is not attached to bridge %s", rec.HostVeth, rec.Bridge)
	}
	if hv.Attrs().OperState != netlink.OperUp {
		return fmt.Errorf("host veth %s is %s, not up", rec.HostVeth, hv.Attrs().OperState)
	}
	return nil
}
