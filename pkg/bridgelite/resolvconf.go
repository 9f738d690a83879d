package bridgelite

import (
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsnet/nsnet/pkg/netnsconf"
	"github.com/nsnet/nsnet/pkg/undo"
)

// pendingResolvConf is a per-netns resolv.conf that ADD is about to write.
type pendingResolvConf struct {
	file    netnsconf.File
	content []byte
	owner   netnsconf.Owner
}

func resolvConfOwner(args *skel.CmdArgs) netnsconf.Owner {
	return netnsconf.Owner{Plugin: "bridge-lite", ContainerID: args.ContainerID, IfName: args.IfName}
}

// planResolvConf decides whether ADD writes a resolv.conf for the named
// netns CNI_NETNS points at, and with what. res.DNS holds the DNS known from
// the config and IPAM; with perNetnsResolvConf "host" and none known, the
// host's servers are used and put in the result too, so that the result
// says what the netns resolves with.
func planResolvConf(c *Conf, args *skel.CmdArgs, res *current.Result) (*pendingResolvConf, error) {
	if c.resolvConf == resolvConfOff {
		return nil, nil
	}
	name, named, err := netnsconf.NamedNetNS(args.Netns)
	if err != nil || !named {
		return nil, err
	}
	if res.DNS.IsEmpty() && c.resolvConf == resolvConfHost {
		host, err := netnsconf.HostDNS(netnsconf.HostResolvConf)
		if err != nil {
			return nil, err
		}
		if len(host.Nameservers) > 0 {
			res.DNS = host
		}
	}
	if res.DNS.IsEmpty() {
		return nil, nil
	}
	o := resolvConfOwner(args)
	content, err := netnsconf.RenderResolvConf(o, res.DNS)
	if err != nil {
		return nil, configError("writing the resolv.conf of netns %s: %v", name, err)
	}
	return &pendingResolvConf{file: netnsconf.ResolvConf(c.NetnsConfDir, name, o, content), content: content, owner: o}, nil
}

// writeResolvConf writes the planned file, which rec already names. A file
// somebody else wrote stays as it is and is dropped from rec (the next
// record write persists that), so DEL and CHECK leave it alone.
func writeResolvConf(u *undo.Stack, rec *record, p *pendingResolvConf) error {
	// Pushed first: a Write that fails half-way may leave its temp file.
	u.Push(func() error { return netnsconf.Remove(p.file) })
	err := netnsconf.Write(p.file, p.content, p.owner)
	if errors.Is(err, netnsconf.ErrNotOurs) {
		fmt.Fprintf(os.Stderr, "bridge-lite: leaving %s as it is: it was not written for %s/%s\n", p.file.Path, rec.ContainerID, rec.IfName)
		rec.ResolvConf = nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing per-netns resolv.conf: %w", err)
	}
	return nil
}

func resolvConfDel(rec *record) error {
	if rec.ResolvConf == nil {
		return nil
	}
	if err := netnsconf.Remove(*rec.ResolvConf); err != nil {
		return fmt.Errorf("removing per-netns resolv.conf: %w", err)
	}
	return nil
}

func resolvConfCheck(rec *record) error {
	if rec.ResolvConf == nil {
		return nil
	}
	if err := netnsconf.Verify(*rec.ResolvConf); err != nil {
		return fmt.Errorf("per-netns resolv.conf: %w", err)
	}
	return nil
}
