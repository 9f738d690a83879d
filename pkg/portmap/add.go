package portmap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/nsnet/nsnet/pkg/cniutil"
	"github.com/nsnet/nsnet/pkg/nat"
	"github.com/nsnet/nsnet/pkg/state"
	"github.com/nsnet/nsnet/pkg/sysctl"
	"github.com/nsnet/nsnet/pkg/undo"
)

const lockTimeout = 10 * time.Second

func cniError(err error) error {
	return cniutil.Error(err, state.ErrLockTimeout)
}

// Add is the CNI ADD verb.
func Add(args *skel.CmdArgs) error {
	return cniError(add(args))
}

func add(args *skel.CmdArgs) error {
	c, err := LoadConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := c.checkMappings(); err != nil {
		return err
	}
	if c.PrevResult == nil {
		return cniutil.ConfigError("portmap-lite must be chained after a plugin that creates the interface (no prevResult)")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("converting prevResult: %v", err), "")
	}
	st, err := state.Open(c.StateDir)
	if err != nil {
		return err
	}
	if old, err := readRecord(st, args.ContainerID, args.IfName); err == nil {
		if old.Complete {
			return fmt.Errorf("%s/%s already has port mappings: DEL it before adding it again", args.ContainerID, args.IfName)
		}
		if err := teardown(st, args.ContainerID, args.IfName, old); err != nil {
			return fmt.Errorf("cleaning up an interrupted ADD of %s/%s: %w", args.ContainerID, args.IfName, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	ms := expand(c.RuntimeConfig.PortMaps, containerIPs(prev, args.IfName))
	if len(ms) > 0 {
		if err := publish(c, st, args, ms); err != nil {
			return err
		}
	}
	return types.PrintResult(c.PrevResult, c.CNIVersion)
}

func publish(c *Conf, st *state.Store, args *skel.CmdArgs, ms []nat.PortMapping) error {
	for _, m := range ms {
		holder, err := portHolder(m)
		if err != nil {
			return err
		}
		if holder != "" {
			return fmt.Errorf("host port %d/%s is already in use on the host: a socket holds %s", m.HostPort, m.Protocol, holder)
		}
	}
	pm, err := nat.NewPortMapper(c.Backend)
	if err != nil {
		return err
	}
	rec := &record{Network: c.Name, Backend: c.Backend, Mappings: toRecord(ms)}
	// Write-ahead: DEL finds the mappings even if ADD dies after this.
	if err := st.Write(args.ContainerID, args.IfName, rec); err != nil {
		return err
	}
	var u undo.Stack
	done := false
	defer func() {
		if !done {
			if err := u.Rollback(); err != nil {
				fmt.Fprintf(os.Stderr, "portmap-lite: rolling back failed ADD of %s/%s: %v\n", args.ContainerID, args.IfName, err)
			}
		}
	}()
	u.Push(func() error { return st.Remove(args.ContainerID, args.IfName) })

	if err := enableRouteLocalnet(ms); err != nil {
		return err
	}
	unlock, err := st.Lock(lockTimeout)
	if err != nil {
		return err
	}
	err = pm.Add(ms)
	unlock()
	if err != nil {
		return fmt.Errorf("publishing ports: %w", err)
	}
	u.Push(func() error { return withdraw(st, pm, ms) })
	// Replies of a UDP "flow" that started before the mapping existed
	// would otherwise keep matching a stale conntrack entry.
	if c.ConntrackFlush == nil || *c.ConntrackFlush {
		if err := flushUDP(ms); err != nil {
			return err
		}
	}
	rec.Complete = true
	if err := st.Write(args.ContainerID, args.IfName, rec); err != nil {
		return err
	}
	done = true
	return nil
}

func withdraw(st *state.Store, pm nat.PortMapper, ms []nat.PortMapping) error {
	unlock, err := st.Lock(lockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	return pm.Del(ms)
}

// enableRouteLocalnet lets 127.0.0.1:hostPort reach a container: the DNATed
// packet keeps its loopback source until masquerade, and the kernel drops
// such packets on an interface without route_localnet. nat drops martian
// 127/8 packets arriving from outside, so this opens no hole.
func enableRouteLocalnet(ms []nat.PortMapping) error {
	done := map[int]bool{}
	for _, m := range ms {
		if m.ContainerIP.To4() == nil {
			continue
		}
		routes, err := netlink.RouteGet(m.ContainerIP)
		if err != nil || len(routes) == 0 {
			return fmt.Errorf("finding the route to %s: %v", m.ContainerIP, err)
		}
		idx := routes[0].LinkIndex
		if done[idx] {
			continue
		}
		done[idx] = true
		l, err := netlink.LinkByIndex(idx)
		if err != nil {
			return fmt.Errorf("finding the interface towards %s: %w", m.ContainerIP, err)
		}
		if err := sysctl.Ensure(sysctl.PathOf("net", "ipv4", "conf", l.Attrs().Name, "route_localnet"), "1"); err != nil {
			return err
		}
	}
	return nil
}

// flushUDP deletes the conntrack entries of UDP flows to the published host
// ports, in both families.
func flushUDP(ms []nat.PortMapping) error {
	var errs []error
	for _, m := range ms {
		if m.Protocol != "udp" {
			continue
		}
		family := netlink.FAMILY_V4
		if m.ContainerIP.To4() == nil {
			family = netlink.FAMILY_V6
		}
		f := &netlink.ConntrackFilter{}
		if err := f.AddProtocol(17); err != nil {
			return err
		}
		if err := f.AddPort(netlink.ConntrackOrigDstPort, uint16(m.HostPort)); err != nil {
			return err
		}
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.InetFamily(family), f); err != nil {
			errs = append(errs, fmt.Errorf("flushing UDP conntrack entries of port %d: %w", m.HostPort, err))
		}
	}
	return errors.Join(errs...)
}
