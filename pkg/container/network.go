package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/cninet"
	"github.com/nsnet/nsnet/pkg/netnsconf"
)

// ifName is the container's interface on its CNI network.
const ifName = "eth0"

// netnsFile pins the container's netns in its state directory, so DEL
// still finds the namespace (and the plugins their interface in it)
// after the container's processes are gone.
const netnsFile = "netns"

// cniTimeout bounds one ADD or DEL chain.
const cniTimeout = time.Minute

// CNI says where a container's CNI network is defined and kept. It is
// recorded with the container so that its monitor and a later rm load the
// same network as run did.
type CNI struct {
	ConfDir   string   `json:"confDir,omitempty"`
	BinDirs   []string `json:"binDirs,omitempty"`
	StateRoot string   `json:"stateRoot,omitempty"`
}

// Network is a container's attachment to a CNI network. It is recorded
// before the ADD, so a DEL follows even when nsnet is killed in between,
// and cleared once the DEL succeeded, so no DEL runs twice.
type Network struct {
	Name     string               `json:"name"`
	NetNS    string               `json:"netns"`
	IfName   string               `json:"ifName"`
	IPs      []string             `json:"ips,omitempty"`
	MAC      string               `json:"mac,omitempty"`
	Gateways []string             `json:"gateways,omitempty"`
	Ports    []cninet.PortMapping `json:"ports,omitempty"`
	Result   *types100.Result     `json:"result,omitempty"`
}

func (c Config) loadNetwork() (*cninet.Network, error) {
	var cni CNI
	if c.CNI != nil {
		cni = *c.CNI
	}
	return cninet.Load(c.Net, cni.ConfDir, cni.BinDirs, cninet.Dirs{StateRoot: cni.StateRoot})
}

// attachNetwork is the container's Prestart for a CNI network n: it pins
// the netns of pid, runs ADD, records the result and rewrites the
// container's /etc/hosts and /etc/resolv.conf from it. On error nothing of
// the attachment is left.
func (s Store) attachNetwork(st *State, n *cninet.Network, pid int) error {
	st.cni = n
	pin := filepath.Join(st.Dir, netnsFile)
	if err := pinNetNS(pid, pin); err != nil {
		return err
	}
	st.Network = &Network{Name: n.Name(), NetNS: pin, IfName: ifName}
	if err := s.save(st); err != nil {
		st.Network = nil
		return errors.Join(err, unpinNetNS(pin))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
	defer cancel()
	res, err := cninet.Attach(ctx, n, st.ID, pin, ifName, cninet.Options{
		PortMappings: st.Config.Publish,
		IPs:          st.Config.IPs,
		MAC:          st.Config.MAC,
	})
	if err != nil {
		st.Network = nil
		return errors.Join(err, unpinNetNS(pin))
	}
	st.Network.fill(res, st.Config.Publish)
	err = s.save(st)
	if err == nil {
		err = writeNetEtcFiles(st.Dir, st.Config, res)
	}
	if err != nil {
		return errors.Join(err, s.detachNetwork(st))
	}
	return nil
}

// fill records what inspect and ps show of an ADD result: the addresses
// and gateways of the container's own interfaces.
func (nw *Network) fill(res *types100.Result, ports []cninet.PortMapping) {
	nw.Result, nw.Ports = res, ports
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) &&
			res.Interfaces[*ip.Interface].Sandbox == "" {
			continue
		}
		nw.IPs = append(nw.IPs, ip.Address.String())
		if ip.Gateway != nil {
			nw.Gateways = append(nw.Gateways, ip.Gateway.String())
		}
	}
	for _, intf := range res.Interfaces {
		if intf.Sandbox != "" && intf.Name == nw.IfName {
			nw.MAC = intf.Mac
		}
	}
}

// detachNetwork runs DEL for the container's attachment, if it has one,
// and unpins its netns, which goes with the pin: the container's
// processes are gone by now. With plugins that clean up from their own
// records (bridge-lite, portmap-lite) the netns goes first (see
// cninet.DetachAndRelease). It clears st.Network on success; the caller
// records st.
func (s Store) detachNetwork(st *State) error {
	nw := st.Network
	if nw == nil {
		return nil
	}
	n, err := st.cni, error(nil)
	if n == nil {
		n, err = st.Config.loadNetwork()
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
		defer cancel()
		err = cninet.DetachAndRelease(ctx, n, st.ID, nw.NetNS, nw.IfName, func() error { return unpinNetNS(nw.NetNS) })
	}
	if err != nil {
		return fmt.Errorf("container %s: %w", st.ID, err)
	}
	st.Network = nil
	return nil
}

// pinNetNS bind-mounts the network namespace of pid on path.
func pinNetNS(pid int, path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("pinning the network namespace: %w", err)
	}
	f.Close()
	src := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("pinning the network namespace: bind-mounting %s on %s: %w", src, path, err)
	}
	return nil
}

// unpinNetNS undoes pinNetNS; a path that is no longer pinned, or gone,
// is fine.
func unpinNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpinning the network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpinning the network namespace: %w", err)
	}
	return nil
}

// writeNetEtcFiles rewrites the container's /etc/hosts and
// /etc/resolv.conf in dir for its CNI result. They are bind-mounted into
// the container already, so they are rewritten in place: a new file
// renamed over them would not be the one the container sees.
func writeNetEtcFiles(dir string, cfg Config, res *types100.Result) error {
	var ips []string
	for _, ip := range res.IPs {
		if ip.Interface == nil || *ip.Interface < 0 || *ip.Interface >= len(res.Interfaces) ||
			res.Interfaces[*ip.Interface].Sandbox != "" {
			ips = append(ips, ip.Address.IP.String())
		}
	}
	hosts, err := cninet.Hosts(cfg.Hostname, ips, hostEntries(cfg.AddHosts))
	if err != nil {
		return err
	}
	resolv, err := resolvConfFor(cfg, res.DNS)
	if err != nil {
		return err
	}
	if err := rewrite(filepath.Join(dir, "hosts"), hosts); err != nil {
		return err
	}
	return rewrite(filepath.Join(dir, "resolv.conf"), resolv)
}

func hostEntries(in []HostEntry) []cninet.HostEntry {
	out := make([]cninet.HostEntry, 0, len(in))
	for _, h := range in {
		out = append(out, cninet.HostEntry{Name: h.Name, IP: h.IP})
	}
	return out
}

// resolvConfFor is the container's resolv.conf: from result (a CNI
// result's DNS, or none), else the host's without loopback servers, with
// --dns and --dns-search taking precedence.
func resolvConfFor(cfg Config, result types.DNS) ([]byte, error) {
	if len(cfg.DNS) == 0 && len(cfg.DNSSearch) == 0 {
		return cninet.ResolvConf(result, hostResolvConf)
	}
	dns := result
	if len(cfg.DNS) > 0 {
		dns.Nameservers = cfg.DNS
	} else if len(dns.Nameservers) == 0 {
		host, err := netnsconf.HostDNS(hostResolvConf)
		if err != nil {
			return nil, err
		}
		dns.Nameservers, dns.Domain, dns.Options = host.Nameservers, host.Domain, host.Options
		if len(dns.Search) == 0 {
			dns.Search = host.Search
		}
	}
	if len(cfg.DNSSearch) > 0 {
		dns.Search = cfg.DNSSearch
	}
	return cninet.ResolvConf(dns, hostResolvConf)
}

// rewrite replaces the content of the existing file path, keeping its
// inode.
func rewrite(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("rewriting %s: %w", path, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("rewriting %s: %w", path, err)
	}
	return nil
}
