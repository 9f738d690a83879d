package bridgelite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/nsnet/nsnet/pkg/bridge"
	"github.com/nsnet/nsnet/pkg/ipam"
	"github.com/nsnet/nsnet/pkg/state"
	"github.com/nsnet/nsnet/pkg/undo"
	"github.com/nsnet/nsnet/pkg/veth"
)

const (
	lockTimeout    = 10 * time.Second
	forwardTimeout = 3 * time.Second
)

// Add is the CNI ADD verb.
func Add(args *skel.CmdArgs) error {
	return cniError(add(context.Background(), args))
}

// openNetNS opens the container netns named by CNI_NETNS and refuses the
// plugin's own namespace, which would wire the host into itself.
func openNetNS(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %q: %v", path, err), "")
	}
	if os.Getenv("CNI_NETNS_OVERRIDE") == "" {
		self, err := ns.GetCurrentNS()
		if err == nil {
			same := sameNS(self, n)
			self.Close()
			if same {
				n.Close()
				return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %q is the plugin's own network namespace", path), "")
			}
		}
	}
	return n, nil
}

func add(ctx context.Context, args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	contNS, err := openNetNS(args.Netns)
	if err != nil {
		return err
	}
	defer contNS.Close()
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	if old, err := readRecord(st, args.ContainerID, args.IfName); err == nil {
		if old.Complete {
			return fmt.Errorf("%s/%s is already attached to network %q: DEL it before adding it again", args.ContainerID, args.IfName, old.Network)
		}
		// An earlier ADD was killed or failed without cleaning up.
		if err := teardown(ctx, st, old, args); err != nil {
			return fmt.Errorf("cleaning up an interrupted ADD of %s/%s: %w", args.ContainerID, args.IfName, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	rec := &record{
		ContainerID: args.ContainerID,
		IfName:      args.IfName,
		Network:     c.Name,
		NetNS:       args.Netns,
		Bridge:      c.Bridge,
		HostVeth:    veth.HostName(args.ContainerID, args.IfName),
	}
	var drv ipam.Driver
	if c.IPAM.Type != "" {
		if drv, err = ipam.Load(args.StdinData); err != nil {
			return err
		}
		rec.IPAMType = c.IPAM.Type
		rec.IPAMConf = args.StdinData
	}
	// Write-ahead: the record names every resource before it exists.
	if err := st.Write(rec.ContainerID, rec.IfName, rec); err != nil {
		return err
	}
	var u undo.Stack
	done := false
	defer func() {
		if !done {
			if err := u.Rollback(); err != nil {
				fmt.Fprintf(os.Stderr, "bridge-lite: rolling back failed ADD of %s/%s: %v\n", args.ContainerID, args.IfName, err)
			}
		}
	}()
	u.Push(func() error { return st.Remove(args.ContainerID, args.IfName) })

	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if drv != nil {
		req := ipamRequest(args, rec)
		ipres, err := drv.Add(ctx, req)
		if err != nil {
			return fmt.Errorf("allocating addresses with %s IPAM: %w", c.IPAM.Type, err)
		}
		u.Push(func() error { return drv.Del(ctx, req, ipsOf(ipres.IPs)) })
		if len(ipres.IPs) == 0 {
			return fmt.Errorf("%s IPAM returned no addresses", c.IPAM.Type)
		}
		res.IPs, res.Routes, res.DNS = ipres.IPs, ipres.Routes, ipres.DNS
	}
	if !c.DNS.IsEmpty() {
		res.DNS = c.DNS
	}
	resolv, err := planResolvConf(c, args, res)
	if err != nil {
		return err
	}
	if resolv != nil {
		rec.ResolvConf = &resolv.file
	}
	gw4, gw6 := gateways(c, res)
	if c.IsDefaultGateway {
		res.Routes = addDefaultRoutes(res.Routes, gw4, gw6)
	}
	for _, ipc := range res.IPs {
		rec.IPs = append(rec.IPs, ipc.Address.String())
	}
	if c.IPMasq {
		rec.MasqBackend, rec.Masq = masqBackend(c), masqEntries(res.IPs)
	}
	if err := st.Write(rec.ContainerID, rec.IfName, rec); err != nil {
		return err
	}
	if resolv != nil {
		if err := writeResolvConf(&u, rec, resolv); err != nil {
			return err
		}
	}

	mtu := c.MTU
	if mtu == 0 {
		if mtu, err = bridge.DefaultRouteMTU(); err != nil {
			return err
		}
	}
	br, err := bridge.Ensure(bridge.Config{Name: c.Bridge, MTU: c.MTU, Promisc: c.PromiscMode, VlanFiltering: c.Vlan != 0})
	if err != nil {
		return err
	}
	if c.IsGateway {
		// The gateway address is shared by every container of the bridge,
		// so it is not undone with this attachment.
		for _, ipc := range res.IPs {
			if ipc.Gateway == nil {
				continue
			}
			gw := &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
			if err := bridge.EnsureAddr(br, gw, c.ForceAddress); err != nil {
				return err
			}
		}
	}
	if c.IsGateway || c.IPMasq {
		if err := bridge.EnableForwarding(gw4 != nil || hasFamily(res.IPs, 4), gw6 != nil || hasFamily(res.IPs, 6)); err != nil {
			return err
		}
	}

	host, err := veth.Create(rec.HostVeth, args.IfName, contNS, mtu, c.mac)
	if err != nil {
		return err
	}
	u.Push(func() error { return veth.Delete(rec.HostVeth) })
	if err := bridge.Attach(br, host, bridge.Port{Hairpin: c.HairpinMode, Isolated: c.PortIsolation, Vlan: c.Vlan, PreserveDefaultVlan: c.PreserveDefaultVlan}); err != nil {
		return err
	}
	contMAC, err := veth.Configure(contNS, veth.Config{
		IfName:    args.IfName,
		Addrs:     addrsOf(res.IPs),
		Routes:    res.Routes,
		Gateway4:  gw4,
		Gateway6:  gw6,
		EnableDAD: c.EnableDad,
	})
	if err != nil {
		return err
	}
	if c.MacSpoofChk {
		if err := setupMacSpoofChk(&u, rec.HostVeth, contMAC); err != nil {
			return err
		}
	}
	if len(rec.Masq) > 0 {
		if err := masqAdd(&u, st, rec); err != nil {
			return err
		}
	}
	if err := bridge.WaitForwarding(rec.HostVeth, forwardTimeout); err != nil {
		return err
	}

	rec.Complete = true
	if err := st.Write(rec.ContainerID, rec.IfName, rec); err != nil {
		return err
	}
	done = true

	res.Interfaces = []*current.Interface{
		{Name: c.Bridge, Mac: br.Attrs().HardwareAddr.String()},
		{Name: rec.HostVeth, Mac: host.Attrs().HardwareAddr.String()},
		{Name: args.IfName, Mac: contMAC.String(), Sandbox: args.Netns},
	}
	if gte, _ := version.GreaterThanOrEqualTo(c.CNIVersion, "1.1.0"); gte && mtu > 0 {
		res.Interfaces[2].Mtu = mtu
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(2)
	}
	return types.PrintResult(res, c.CNIVersion)
}

func ipamRequest(args *skel.CmdArgs, rec *record) ipam.Request {
	return ipam.Request{
		Stdin:      rec.IPAMConf,
		Network:    rec.Network,
		Attachment: ipam.Attachment{ContainerID: rec.ContainerID, IfName: rec.IfName},
		Args:       args.Args,
		NetNS:      args.Netns,
	}
}

// gateways returns the gateway of each family, filling in the subnet's
// first address when IPAM gave none and the bridge is the gateway.
func gateways(c *Conf, res *current.Result) (gw4, gw6 net.IP) {
	for _, ipc := range res.IPs {
		if ipc.Gateway == nil && c.IsGateway {
			ipc.Gateway = firstHost(&ipc.Address)
		}
		if ipc.Gateway == nil {
			continue
		}
		if ipc.Address.IP.To4() != nil {
			if gw4 == nil {
				gw4 = ipc.Gateway
			}
		} else if gw6 == nil {
			gw6 = ipc.Gateway
		}
	}
	return gw4, gw6
}

func firstHost(n *net.IPNet) net.IP {
	ip := n.IP.Mask(n.Mask)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	out := make(net.IP, len(ip))
	copy(out, ip)
	out[len(out)-1]++
	return out
}

// addDefaultRoutes adds a default route per family via its gateway unless
// IPAM already returned a default route with a next hop.
func addDefaultRoutes(routes []*types.Route, gw4, gw6 net.IP) []*types.Route {
	have4, have6 := false, false
	for _, r := range routes {
		if ones, _ := r.Dst.Mask.Size(); ones == 0 && r.GW != nil {
			if r.Dst.IP.To4() != nil {
				have4 = true
			} else {
				have6 = true
			}
		}
	}
	if gw4 != nil && !have4 {
		routes = append(routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw4})
	}
	if gw6 != nil && !have6 {
		routes = append(routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: gw6})
	}
	return routes
}

func hasFamily(ips []*current.IPConfig, v int) bool {
	for _, ipc := range ips {
		if (ipc.Address.IP.To4() != nil) == (v == 4) {
			return true
		}
	}
	return false
}

func ipsOf(ips []*current.IPConfig) []net.IP {
	out := make([]net.IP, 0, len(ips))
	for _, ipc := range ips {
		out = append(out, ipc.Address.IP)
	}
	return out
}

func addrsOf(ips []*current.IPConfig) []*net.IPNet {
	out := make([]*net.IPNet, 0, len(ips))
	for _, ipc := range ips {
		a := ipc.Address
		out = append(out, &a)
	}
	return out
}
