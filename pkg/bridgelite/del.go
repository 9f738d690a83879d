package bridgelite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sync"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/nsnet/nsnet/pkg/ipam"
	"github.com/nsnet/nsnet/pkg/state"
	"github.com/nsnet/nsnet/pkg/veth"
)

// Del is the CNI DEL verb. It needs nothing but the container ID and
// interface name: what to remove comes from the attachment's record.
func Del(args *skel.CmdArgs) error {
	return cniError(del(context.Background(), args))
}

func del(ctx context.Context, args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	rec, err := readRecord(st, args.ContainerID, args.IfName)
	switch {
	case err == nil:
		return teardown(ctx, st, rec, args)
	case errors.Is(err, fs.ErrNotExist):
		return teardownUnrecorded(ctx, c, args)
	default:
		return err
	}
}

// teardown removes everything rec names and then rec itself. It keeps
// going past errors so one stuck resource does not leak the others, and
// keeps the record when something failed so a retried DEL or GC can finish.
func teardown(ctx context.Context, st *state.Store, rec *record, args *skel.CmdArgs) error {
	// Deleting a veth and deleting nftables elements each wait for an RCU
	// grace period in the kernel (~10-20 ms); they are independent, so
	// they wait together.
	var vethErr error
	var wg sync.WaitGroup
	if rec.HostVeth != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vethErr = veth.Delete(rec.HostVeth)
		}()
	}
	errs := []error{masqDel(st, rec), resolvConfDel(rec)}
	if rec.MacSpoof {
		errs = append(errs, macSpoofDel(rec.HostVeth))
	}
	if rec.IPAMType != "" {
		errs = append(errs, ipamDel(ctx, rec, args))
	}
	wg.Wait()
	if err := errors.Join(append(errs, vethErr)...); err != nil {
		return fmt.Errorf("removing %s/%s: %w", rec.ContainerID, rec.IfName, err)
	}
	return st.Remove(rec.ContainerID, rec.IfName)
}

func ipamDel(ctx context.Context, rec *record, args *skel.CmdArgs) error {
	drv, err := ipam.Load(rec.IPAMConf)
	if err != nil {
		return err
	}
	var hint []net.IP
	for _, s := range rec.IPs {
		if ip, _, err := net.ParseCIDR(s); err == nil {
			hint = append(hint, ip)
		}
	}
	if err := drv.Del(ctx, ipamRequest(args, rec), hint); err != nil {
		return fmt.Errorf("releasing addresses with %s IPAM: %w", rec.IPAMType, err)
	}
	return nil
}

// teardownUnrecorded handles a DEL with no record: DEL twice, DEL without
// ADD, or an attachment made by another plugin before a switch to
// bridge-lite. Our ADD writes the record before creating anything, so only
// what the config and CNI_NETNS point at can exist.
func teardownUnrecorded(ctx context.Context, c *Conf, args *skel.CmdArgs) error {
	var errs []error
	if err := veth.Delete(veth.HostName(args.ContainerID, args.IfName)); err != nil {
		errs = append(errs, err)
	}
	if args.Netns != "" {
		if n, err := ns.GetNS(args.Netns); err == nil {
			if err := veth.DeleteIn(n, args.IfName); err != nil {
				errs = append(errs, err)
			}
			n.Close()
		}
	}
	if c.IPAM.Type != "" {
		rec := &record{ContainerID: args.ContainerID, IfName: args.IfName, Network: c.Name, IPAMType: c.IPAM.Type, IPAMConf: args.StdinData}
		if err := ipamDel(ctx, rec, args); err != nil {
			errs = append(errs, err)
		}
	}
	// A record whose first write was cut short leaves only its temp file.
	if st, err := state.Open(c.StateDir); err == nil {
		if err := st.Remove(args.ContainerID, args.IfName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
