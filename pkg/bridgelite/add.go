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
	"github.com/vishvananda/netlink"

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
	if err := reclaim(ctx, st, args); err != nil {
		return err
	}
	a := &adder{ctx: ctx, c: c, args: args, st: st, contNS: contNS}
	if err := a.begin(); err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			if err := a.u.Rollback(); err != nil {
				fmt.Fprintf(os.Stderr, "bridge-lite: rolling back failed ADD of %s/%s: %v\n", args.ContainerID, args.IfName, err)
			}
		}
	}()
	for _, step := range []func() error{a.allocate, a.plan, a.hostSide, a.link, a.firewall, a.finish} {
		if err := step(); err != nil {
			return err
		}
	}
	done = true
	return types.PrintResult(a.result(), c.CNIVersion)
}

// reclaim cleans up after an earlier ADD of the same attachment that was
// killed or failed without cleaning up, and refuses a second ADD of a
// finished one.
func reclaim(ctx context.Context, st *state.Store, args *skel.CmdArgs) error {
	old, err := readRecord(st, args.ContainerID, args.IfName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if old.Complete {
		return fmt.Errorf("%s/%s is already attached to network %q: DEL it before adding it again", args.ContainerID, args.IfName, old.Network)
	}
	if err := teardown(ctx, st, old, args); err != nil {
		return fmt.Errorf("cleaning up an interrupted ADD of %s/%s: %w", args.ContainerID, args.IfName, err)
	}
	return nil
}

// adder carries one ADD through its steps. Every step that creates
// something registers its undo on u and, before creating it, makes sure
// the record (written ahead) names it.
type adder struct {
	ctx    context.Context
	c      *Conf
	args   *skel.CmdArgs
	st     *state.Store
	contNS ns.NetNS
	u      undo.Stack

	rec      *record
	drv      ipam.Driver
	res      *current.Result
	resolv   *pendingResolvConf
	gw4, gw6 net.IP
	mtu      int
	br       netlink.Link
	host     netlink.Link
	contMAC  net.HardwareAddr
}

func (a *adder) save() error {
	return a.st.Write(a.rec.ContainerID, a.rec.IfName, a.rec)
}

// begin writes the first record, naming the host veth and the IPAM before
// either exists.
func (a *adder) begin() error {
	a.rec = &record{
		ContainerID: a.args.ContainerID,
		IfName:      a.args.IfName,
		Network:     a.c.Name,
		NetNS:       a.args.Netns,
		Bridge:      a.c.Bridge,
		HostVeth:    veth.HostName(a.args.ContainerID, a.args.IfName),
		MacSpoof:    a.c.MacSpoofChk,
	}
	if a.c.IPAM.Type != "" {
		drv, err := ipam.Load(a.args.StdinData)
		if err != nil {
			return err
		}
		a.drv = drv
		a.rec.IPAMType = a.c.IPAM.Type
		a.rec.IPAMConf = a.args.StdinData
	}
	if err := a.save(); err != nil {
		return err
	}
	a.u.Push(func() error { return a.st.Remove(a.args.ContainerID, a.args.IfName) })
	return nil
}

// allocate reserves the attachment's addresses.
func (a *adder) allocate() error {
	a.res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if a.drv != nil {
		req := ipamRequest(a.args, a.rec)
		ipres, err := a.drv.Add(a.ctx, req)
		if err != nil {
			return fmt.Errorf("allocating addresses with %s IPAM: %w", a.c.IPAM.Type, err)
		}
		a.u.Push(func() error { return a.drv.Del(a.ctx, req, ipsOf(ipres.IPs)) })
		if len(ipres.IPs) == 0 {
			return fmt.Errorf("%s IPAM returned no addresses", a.c.IPAM.Type)
		}
		a.res.IPs, a.res.Routes, a.res.DNS = ipres.IPs, ipres.Routes, ipres.DNS
	}
	if !a.c.DNS.IsEmpty() {
		a.res.DNS = a.c.DNS
	}
	return nil
}

// plan settles gateways, routes, DNS and masquerade entries and records
// them before anything is created from them.
func (a *adder) plan() error {
	resolv, err := planResolvConf(a.c, a.args, a.res)
	if err != nil {
		return err
	}
	a.resolv = resolv
	if resolv != nil {
		a.rec.ResolvConf = &resolv.file
	}
	a.gw4, a.gw6 = gateways(a.c, a.res)
	if a.c.IsDefaultGateway {
		a.res.Routes = addDefaultRoutes(a.res.Routes, a.gw4, a.gw6)
	}
	for _, ipc := range a.res.IPs {
		a.rec.IPs = append(a.rec.IPs, ipc.Address.String())
	}
	if a.c.IPMasq {
		a.rec.MasqBackend, a.rec.Masq = masqBackend(a.c), masqEntries(a.res.IPs)
	}
	if err := a.save(); err != nil {
		return err
	}
	if resolv != nil {
		return writeResolvConf(&a.u, a.rec, resolv)
	}
	return nil
}

// hostSide prepares what the attachment shares with the bridge's other
// containers: the bridge, its gateway addresses and forwarding. None of it
// is undone with this attachment.
func (a *adder) hostSide() error {
	a.mtu = a.c.MTU
	if a.mtu == 0 {
		mtu, err := bridge.DefaultRouteMTU()
		if err != nil {
			return err
		}
		a.mtu = mtu
	}
	br, err := bridge.Ensure(bridge.Config{Name: a.c.Bridge, MTU: a.c.MTU, Promisc: a.c.PromiscMode, VlanFiltering: a.c.Vlan != 0})
	if err != nil {
		return err
	}
	a.br = br
	if a.c.IsGateway {
		for _, ipc := range a.res.IPs {
			if ipc.Gateway == nil {
				continue
			}
			gw := &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}
			if err := bridge.EnsureAddr(br, gw, a.c.ForceAddress); err != nil {
				return err
			}
		}
	}
	if a.c.IsGateway || a.c.IPMasq {
		return bridge.EnableForwarding(a.gw4 != nil || hasFamily(a.res.IPs, 4), a.gw6 != nil || hasFamily(a.res.IPs, 6))
	}
	return nil
}

// link creates the veth pair, attaches the host end to the bridge and
// configures the container end.
func (a *adder) link() error {
	host, err := veth.Create(a.rec.HostVeth, a.args.IfName, a.contNS, a.mtu, a.c.mac)
	if err != nil {
		return err
	}
	a.host = host
	a.u.Push(func() error { return veth.Delete(a.rec.HostVeth) })
	port := bridge.Port{Hairpin: a.c.HairpinMode, Isolated: a.c.PortIsolation, Vlan: a.c.Vlan, PreserveDefaultVlan: a.c.PreserveDefaultVlan}
	if err := bridge.Attach(a.br, host, port); err != nil {
		return err
	}
	a.contMAC, err = veth.Configure(a.contNS, veth.Config{
		IfName:    a.args.IfName,
		Addrs:     addrsOf(a.res.IPs),
		Routes:    a.res.Routes,
		Gateway4:  a.gw4,
		Gateway6:  a.gw6,
		EnableDAD: a.c.EnableDad,
	})
	return err
}

// firewall adds the MAC-spoofing guard and the masquerade entries.
func (a *adder) firewall() error {
	if a.c.MacSpoofChk {
		if err := setupMacSpoofChk(&a.u, a.rec.HostVeth, a.contMAC); err != nil {
			return err
		}
	}
	if len(a.rec.Masq) > 0 {
		return masqAdd(&a.u, a.st, a.rec)
	}
	return nil
}

// finish waits until the port forwards and marks the record complete.
func (a *adder) finish() error {
	if err := bridge.WaitForwarding(a.rec.HostVeth, forwardTimeout); err != nil {
		return err
	}
	a.rec.Complete = true
	return a.save()
}

// result describes the attachment: bridge, host veth and container
// interface, with the addresses on the last.
func (a *adder) result() *current.Result {
	res := a.res
	res.Interfaces = []*current.Interface{
		{Name: a.c.Bridge, Mac: a.br.Attrs().HardwareAddr.String()},
		{Name: a.rec.HostVeth, Mac: a.host.Attrs().HardwareAddr.String()},
		{Name: a.args.IfName, Mac: a.contMAC.String(), Sandbox: a.args.Netns},
	}
	if gte, _ := version.GreaterThanOrEqualTo(a.c.CNIVersion, "1.1.0"); gte && a.mtu > 0 {
		res.Interfaces[2].Mtu = a.mtu
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(2)
	}
	return res
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
