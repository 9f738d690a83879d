// Package cninet attaches network namespaces to CNI networks through
// libcni, as a container runtime does: it loads a network list (or nsnet's
// embedded default network), runs ADD, CHECK, DEL, GC and STATUS with a
// result cache of its own, and turns publish flags and ADD results into
// port mappings and a container's /etc/resolv.conf and /etc/hosts.
//
// Every kernel-facing call works in the caller's current network namespace:
// plugins run there, and the embedded network's subnet is chosen from its
// routes and addresses.
package cninet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Defaults of a container runtime on a host.
const (
	DefaultNetwork   = "bridge-lite"
	DefaultConfDir   = "/etc/cni/net.d"
	DefaultBinDir    = "/opt/cni/bin"
	DefaultStateRoot = "/run/cni/nsnet"
)

// Dirs says where nsnet keeps its CNI state. Zero fields take the defaults;
// tests point them at temp dirs.
type Dirs struct {
	// StateRoot holds the embedded network's IPAM and plugin state and, by
	// default, the result cache. It is under /run so a reboot, which takes
	// every attachment away, takes their state too.
	StateRoot string
	// CacheDir is libcni's result cache (results/<net>-<id>-<if>); default
	// StateRoot/cache.
	CacheDir string
}

func (d Dirs) withDefaults() Dirs {
	if d.StateRoot == "" {
		d.StateRoot = DefaultStateRoot
	}
	if d.CacheDir == "" {
		d.CacheDir = filepath.Join(d.StateRoot, "cache")
	}
	return d
}

// Network is a loaded network list with the libcni runtime that drives its
// plugins.
type Network struct {
	List *libcni.NetworkConfigList
	// Embedded is set when List is nsnet's built-in default network rather
	// than a file of the conf dir.
	Embedded bool
	// BinDirs are searched for plugins, in order.
	BinDirs []string
	// CacheDir is the libcni result cache in use.
	CacheDir string

	cni *libcni.CNIConfig
}

// Name is the network's name.
func (n *Network) Name() string { return n.List.Name }

// DefaultBinDirs is where a runtime looks for plugins: DefaultBinDir, then
// the directory of the running executable, where nsnet's own plugins are
// installed next to it.
func DefaultBinDirs() []string {
	dirs := []string{DefaultBinDir}
	if exe, err := os.Executable(); err == nil {
		if d := filepath.Dir(exe); d != DefaultBinDir {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// Load finds the network list name in confDir the way libcni does
// (*.conflist first, then single-plugin *.conf and *.json, in file name
// order). When no file defines it and name is DefaultNetwork, it returns
// the embedded default network, whose subnet is chosen from the current
// netns (see Embedded). Empty confDir and nil binDirs take the defaults.
func Load(name, confDir string, binDirs []string, dirs Dirs) (*Network, error) {
	if name == "" {
		return nil, errors.New("no network name given")
	}
	if confDir == "" {
		confDir = DefaultConfDir
	}
	if binDirs == nil {
		binDirs = DefaultBinDirs()
	}
	dirs = dirs.withDefaults()
	n := &Network{
		BinDirs:  binDirs,
		CacheDir: dirs.CacheDir,
		cni:      libcni.NewCNIConfigWithCacheDir(binDirs, dirs.CacheDir, nil),
	}
	list, err := libcni.LoadConfList(confDir, name)
	var notFound libcni.NotFoundError
	var noConfigs libcni.NoConfigsFoundError
	switch {
	case err == nil:
		n.List = list
		return n, nil
	case !errors.As(err, &notFound) && !errors.As(err, &noConfigs):
		return nil, fmt.Errorf("loading network %q from %s: %w", name, confDir, err)
	case name != DefaultNetwork:
		return nil, notDefined(name, confDir)
	}
	if n.List, err = Embedded(dirs.StateRoot); err != nil {
		return nil, err
	}
	n.Embedded = true
	return n, nil
}

// PrepareEncoding builds encoding/json's codecs for the CNI results an
// attachment decodes and encodes between its plugins and into the cache.
// Their first use costs about a millisecond of reflection while the
// plugins wait; on a goroutine of its own, early, it overlaps other work.
func PrepareEncoding() {
	var r types100.Result
	_ = json.Unmarshal([]byte(sampleResult), &r)
	_, _ = json.Marshal(&r)
}

const sampleResult = `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/x"}],` +
	`"ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],` +
	`"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}],"dns":{"nameservers":["10.0.0.1"],"search":["x"]}}`

// notDefined says which networks confDir does define, which is what a user
// who mistyped a name needs.
func notDefined(name, confDir string) error {
	var names []string
	files, _ := libcni.ConfFiles(confDir, []string{".conflist", ".conf", ".json"})
	for _, f := range files {
		if l, err := libcni.NetworkConfFromFile(f); err == nil {
			names = append(names, l.Name)
		} else if c, err := libcni.ConfFromFile(f); err == nil {
			names = append(names, c.Network.Name)
		}
	}
	sort.Strings(names)
	names = slices.Compact(names)
	known := "none"
	if len(names) > 0 {
		known = fmt.Sprintf("%q", names)
	}
	return fmt.Errorf("network %q is not defined in %s (networks there: %s; only %q has a built-in default)",
		name, confDir, known, DefaultNetwork)
}

// Options are what a runtime passes along with an ADD: capability args
// (sent only to plugins that declare the capability) and CNI_ARGS.
type Options struct {
	PortMappings []PortMapping
	// IPs are requested addresses ("10.88.0.5" or "10.88.0.5/16").
	IPs []string
	MAC string
	// Args become CNI_ARGS.
	Args [][2]string
	// Capabilities are further capability args, e.g. "bandwidth"; the
	// fields above win over the same keys here.
	Capabilities map[string]any
}

func (o Options) capabilityArgs() map[string]any {
	caps := maps.Clone(o.Capabilities)
	if caps == nil {
		caps = map[string]any{}
	}
	if len(o.PortMappings) > 0 {
		caps["portMappings"] = o.PortMappings
	}
	if len(o.IPs) > 0 {
		caps["ips"] = o.IPs
	}
	if o.MAC != "" {
		caps["mac"] = o.MAC
	}
	return caps
}

// Attach runs ADD for the attachment (containerID, ifName) of the netns at
// netnsPath, which must exist. A failed ADD is followed by a DEL, so it
// leaves nothing behind. An attachment that is already in the cache is
// refused without running any plugin: the DEL after a failed second ADD
// would tear down the first.
func Attach(ctx context.Context, n *Network, containerID, netnsPath, ifName string, o Options) (*types100.Result, error) {
	what := fmt.Sprintf("attaching %s (%s) to network %s", containerID, ifName, n.Name())
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netnsPath,
		IfName:         ifName,
		Args:           o.Args,
		CapabilityArgs: o.capabilityArgs(),
	}
	if _, err := os.Stat(netnsPath); err != nil {
		return nil, fmt.Errorf("%s: netns: %w", what, err)
	}
	cached, err := n.cni.GetNetworkListCachedResult(n.List, rt)
	if err != nil {
		return nil, fmt.Errorf("%s: reading the result cache: %w", what, err)
	}
	if cached != nil {
		return nil, fmt.Errorf("%s: already attached (delete it first)", what)
	}
	raw, err := n.addList(ctx, n.List, rt)
	if err == nil {
		var res *types100.Result
		if res, err = types100.NewResultFromResult(raw); err == nil {
			return res, nil
		}
		err = fmt.Errorf("converting the result: %w", err)
	}
	if derr := cleanup(ctx, n, rt); derr != nil {
		err = errors.Join(err, fmt.Errorf("cleaning up with DEL: %w", derr))
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// cleanup runs the DEL after a failed ADD. libcni stops at the first
// plugin whose DEL fails, and a plugin may refuse in DEL the very
// capability args that made its ADD fail, which would leave the earlier
// plugins' work in place; a second DEL without them lets those plugins
// clean up from their own records.
func cleanup(ctx context.Context, n *Network, rt *libcni.RuntimeConf) error {
	err := n.delList(ctx, n.List, rt)
	if err == nil || len(rt.CapabilityArgs) == 0 {
		return err
	}
	bare := *rt
	bare.CapabilityArgs = nil
	if err2 := n.delList(ctx, n.List, &bare); err2 != nil {
		return errors.Join(err, fmt.Errorf("without capability args: %w", err2))
	}
	return nil
}

// cachedAttachment returns the network list and runtime args the
// attachment was added with, or ok false when the cache has no record of
// it. CHECK and DEL must see what ADD saw (the config must not change in
// between, and portmap-style plugins check their capability args).
func (n *Network) cachedAttachment(containerID, netnsPath, ifName string) (*libcni.NetworkConfigList, *libcni.RuntimeConf, bool, error) {
	rt := &libcni.RuntimeConf{ContainerID: containerID, NetNS: netnsPath, IfName: ifName}
	conf, cachedRT, err := n.cni.GetNetworkListCachedConfig(n.List, rt)
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the result cache: %w", err)
	}
	if conf == nil {
		return n.List, rt, false, nil
	}
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return nil, nil, false, fmt.Errorf("parsing the cached network config: %w", err)
	}
	return list, cachedRT, true, nil
}

// Check runs CHECK for an attachment made by Attach, with the config and
// args it was added with.
func Check(ctx context.Context, n *Network, containerID, netnsPath, ifName string) error {
	what := fmt.Sprintf("checking %s (%s) on network %s", containerID, ifName, n.Name())
	list, rt, ok, err := n.cachedAttachment(containerID, netnsPath, ifName)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !ok {
		return fmt.Errorf("%s: not attached (no cached result in %s)", what, n.CacheDir)
	}
	if err := n.checkList(ctx, list, rt); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Detach runs DEL for an attachment, with the config and args it was added
// with when the cache has them. netnsPath may be empty or name a netns that
// is gone: plugins then clean up from their own records.
func Detach(ctx context.Context, n *Network, containerID, netnsPath, ifName string) error {
	return DetachAndRelease(ctx, n, containerID, netnsPath, ifName, nil)
}

// DetachAndRelease is Detach for a runtime that owns the netns at
// netnsPath, whose processes are gone, and removes it with release. The
// order is DEL, then release, so plugins can clean up inside the netns
// (the reference bridge reads the interface's addresses there to remove
// its masquerade rules). When every plugin the attachment was added with
// cleans up from its own records (SelfCleaning), release comes first and
// DEL runs with an empty CNI_NETNS: the kernel removes the container's
// interface with the namespace in the background, where deleting it in a
// live namespace makes DEL wait for RCU grace periods, tens of
// milliseconds. A nil release is Detach.
func DetachAndRelease(ctx context.Context, n *Network, containerID, netnsPath, ifName string, release func() error) error {
	if netnsPath != "" {
		if _, err := os.Stat(netnsPath); err != nil {
			netnsPath = ""
		}
	}
	what := fmt.Sprintf("detaching %s (%s) from network %s", containerID, ifName, n.Name())
	list, rt, _, err := n.cachedAttachment(containerID, netnsPath, ifName)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if release != nil && SelfCleaning(list) {
		if err := release(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		release, rt.NetNS = nil, ""
	}
	if err := n.delList(ctx, list, rt); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if release != nil {
		if err := release(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// SelfCleaning reports whether every plugin of list removes in DEL what
// its ADD made from records of its own, without looking into the
// container's netns: nsnet's bridge-lite, with no IPAM or its in-process
// host-local, and portmap-lite.
func SelfCleaning(list *libcni.NetworkConfigList) bool {
	if list == nil || len(list.Plugins) == 0 {
		return false
	}
	for _, p := range list.Plugins {
		switch p.Network.Type {
		case "portmap-lite":
		case "bridge-lite":
			if t := p.Network.IPAM.Type; t != "" && t != "host-local" {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Attachment names one attachment for GC.
type Attachment struct {
	ContainerID string
	IfName      string
}

// GC deletes every cached attachment of the network that is not in valid
// (DEL with its cached args), then, for cniVersion 1.1.0 and later, runs
// GC with valid as the attachments to keep. It goes on past errors and
// returns all of them.
func GC(ctx context.Context, n *Network, valid []Attachment) error {
	args := &libcni.GCArgs{ValidAttachments: make([]types.GCAttachment, 0, len(valid))}
	for _, a := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	if err := n.cni.GCNetworkList(ctx, n.List, args); err != nil {
		return fmt.Errorf("garbage-collecting network %s: %w", n.Name(), err)
	}
	return nil
}

// Status runs STATUS (cniVersion 1.1.0 and later; older networks are
// always ready). nil means the network can take ADDs.
func Status(ctx context.Context, n *Network) error {
	if err := n.cni.GetStatusNetworkList(ctx, n.List); err != nil {
		return fmt.Errorf("status of network %s: %w", n.Name(), err)
	}
	return nil
}
