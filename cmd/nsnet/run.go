package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nsnet/nsnet/isolation"
	"github.com/nsnet/nsnet/isolation/cgroups"
	"github.com/nsnet/nsnet/pkg/cninet"
	"github.com/nsnet/nsnet/pkg/container"
)

// runFlags are the flags of nsnet run as given.
type runFlags struct {
	detach, noInit                     bool
	id, name                           string
	volumes, uidMaps, gidMaps, sysctls []string
	env, addHosts                      []string
	publish, dns                       []string
	cniBinDirs                         []string
	cni                                container.CNI
	cfg                                container.Config
	res                                resourceFlags
	deviceRules                        []string
}

func runCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARGS...]",
		Short: "Run a command in a new container",
		Long: `Run CMD in a new container: new UTS, IPC, PID, mount, cgroup and network
namespaces (optionally a user namespace), its own root filesystem (--rootfs, or
a throw-away root made of the host's /usr, /bin, /sbin, /lib* and /etc read-only)
and runc's default hardening. With --net NETWORK the container's netns is
attached to that CNI network (CNI ADD) before CMD starts, its /etc/hosts and
/etc/resolv.conf follow the result, and it is detached (CNI DEL) when it exits
or is removed. In the foreground nsnet exits with CMD's exit
code (128+N when signal N killed it) and forwards SIGINT, SIGTERM and SIGHUP;
with -d it prints the container's id and a monitor process waits for it.
Errors of nsnet itself exit with 125.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			go container.PrepareEncoding()
			cfg, err := f.config(args)
			if err != nil {
				return err
			}
			s := store()
			st, err := s.Prepare(f.id, f.name, cfg)
			if err != nil {
				return err
			}
			if f.detach {
				monitor := []string{"nsnet", "--root", s.Root, "container-monitor", st.ID}
				if err := s.StartDetached(st, monitor); err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), st.ID)
				return nil
			}
			code, err := s.Run(st, container.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
			if err != nil {
				return err
			}
			return exitCode(code)
		},
	}
	cmd.Flags().SetInterspersed(false)
	fl := cmd.Flags()
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background and print the container's id")
	fl.BoolVar(&f.cfg.AutoRemove, "rm", false, "remove the container's state when it exits")
	fl.StringVar(&f.id, "id", "", "container id (default: 12 random hex digits)")
	fl.StringVar(&f.name, "name", "", "container name (default: the id)")
	fl.StringVar(&f.cfg.Hostname, "hostname", "", "host name (default: the short id)")
	fl.StringVar(&f.cfg.Rootfs, "rootfs", "", "root filesystem directory (default: read-only binds of the host's system directories)")
	fl.BoolVar(&f.cfg.ReadOnly, "read-only", false, "make the root filesystem read-only")
	fl.StringArrayVarP(&f.volumes, "volume", "v", nil, "bind-mount HOST:CONTAINER[:ro] (repeatable)")
	fl.StringVar(&f.cfg.Net, "net", "none",
		"network: none (new namespace, loopback only), host, ns:/path/of/netns, or a CNI network name (e.g. "+cninet.DefaultNetwork+", built in)")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil,
		"publish [hostIP:]hostPort:containerPort[/tcp|udp|sctp] (ranges a-b allowed; repeatable; needs a CNI network)")
	fl.StringArrayVar(&f.cfg.IPs, "ip", nil, "request this address on the CNI network (repeatable)")
	fl.StringVar(&f.cfg.MAC, "mac", "", "request this MAC address on the CNI network")
	fl.StringArrayVar(&f.dns, "dns", nil, "nameserver for /etc/resolv.conf (repeatable; replaces the network's and the host's)")
	fl.StringArrayVar(&f.cfg.DNSSearch, "dns-search", nil, "search domain for /etc/resolv.conf (repeatable)")
	cniRoot := os.Getenv(cniRootEnv)
	if cniRoot == "" {
		cniRoot = cninet.DefaultStateRoot
	}
	fl.StringVar(&f.cni.ConfDir, "cni-conf-dir", cninet.DefaultConfDir, "directory of CNI network configuration lists")
	fl.StringArrayVar(&f.cniBinDirs, "cni-bin-dir", nil,
		"directory of CNI plugins, repeatable or colon-separated (default "+cninet.DefaultBinDir+", then nsnet's own directory)")
	fl.StringVar(&f.cni.StateRoot, "cni-state-root", cniRoot,
		"directory of the built-in network's state and of the CNI result cache (env "+cniRootEnv+")")
	fl.BoolVar(&f.cfg.UserNS, "userns", false, "run in a new user namespace (default map: the caller is root inside)")
	fl.StringArrayVar(&f.uidMaps, "uidmap", nil, "user namespace uid range CONTAINER:HOST:SIZE (repeatable; implies --userns)")
	fl.StringArrayVar(&f.gidMaps, "gidmap", nil, "user namespace gid range CONTAINER:HOST:SIZE (repeatable; implies --userns)")
	fl.StringVar(&f.cfg.Propagation, "propagation", "", "mount propagation of the container's root: private (default) or slave")
	fl.BoolVar(&f.cfg.Privileged, "privileged", false, "keep all capabilities and unmask kernel paths")
	fl.StringArrayVar(&f.cfg.CapAdd, "cap-add", nil, "add a capability (or ALL)")
	fl.StringArrayVar(&f.cfg.CapDrop, "cap-drop", nil, "drop a capability (or ALL)")
	fl.BoolVar(&f.cfg.Init, "init", true, "run nsnet's init as PID 1 to forward signals and reap zombies")
	fl.BoolVar(&f.noInit, "no-init", false, "make CMD PID 1 (same as --init=false)")
	fl.StringArrayVar(&f.sysctls, "sysctl", nil, "set a namespaced sysctl KEY=VALUE (repeatable)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable KEY=VAL (KEY alone: the caller's value)")
	fl.StringVarP(&f.cfg.Cwd, "workdir", "w", "", "working directory inside the container")
	fl.StringArrayVar(&f.addHosts, "add-host", nil, "add NAME:IP to /etc/hosts (repeatable)")
	fl.BoolVarP(&f.cfg.Tty, "tty", "t", false, "give CMD a terminal")
	f.res.register(fl)
	fl.StringVar(&f.cfg.CgroupParent, "cgroup-parent", "",
		"cgroup to create the container's under: relative to nsnet's own cgroup, or absolute (default \""+cgroups.DefaultParent+"\"); a slice with the systemd manager")
	fl.StringArrayVar(&f.deviceRules, "device-cgroup-rule", nil,
		"allow a device beyond the defaults, e.g. 'c 10:200 rwm' (repeatable)")
	fl.StringVar(&f.cfg.CgroupManager, "cgroup-manager", "",
		"cgroup manager: cgroupfs or systemd (a transient scope in the --cgroup-parent slice, default "+cgroups.DefaultSlice+"); default systemd when it is PID 1 on a cgroup v2 host")
	return cmd
}

// config checks the flags and turns them into the container's Config.
func (f *runFlags) config(args []string) (container.Config, error) {
	cfg := f.cfg
	cfg.Args = args
	if f.noInit {
		cfg.Init = false
	}
	cfg.Env = envList(f.env)
	res, err := f.res.resources()
	if err != nil {
		return cfg, err
	}
	cfg.Resources = res
	for _, v := range f.deviceRules {
		rule, err := cgroups.ParseDeviceRule(v)
		if err != nil {
			return cfg, fmt.Errorf("--device-cgroup-rule: %w", err)
		}
		cfg.DeviceRules = append(cfg.DeviceRules, rule)
	}
	for _, v := range f.volumes {
		vol, err := isolation.ParseVolume(v)
		if err != nil {
			return cfg, err
		}
		cfg.Volumes = append(cfg.Volumes, vol)
	}
	for _, m := range f.uidMaps {
		idm, err := isolation.ParseIDMap(m)
		if err != nil {
			return cfg, err
		}
		cfg.UIDMap = append(cfg.UIDMap, idm)
	}
	for _, m := range f.gidMaps {
		idm, err := isolation.ParseIDMap(m)
		if err != nil {
			return cfg, err
		}
		cfg.GIDMap = append(cfg.GIDMap, idm)
	}
	if len(cfg.UIDMap)+len(cfg.GIDMap) > 0 {
		cfg.UserNS = true
	}
	for _, kv := range f.sysctls {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cfg, fmt.Errorf("--sysctl %q: want KEY=VALUE", kv)
		}
		if cfg.Sysctls == nil {
			cfg.Sysctls = map[string]string{}
		}
		cfg.Sysctls[k] = v
	}
	for _, h := range f.addHosts {
		e, err := container.ParseHostEntry(h)
		if err != nil {
			return cfg, err
		}
		cfg.AddHosts = append(cfg.AddHosts, e)
	}
	for _, p := range f.publish {
		ms, err := cninet.ParsePublish(p)
		if err != nil {
			return cfg, err
		}
		cfg.Publish = append(cfg.Publish, ms...)
	}
	for _, d := range f.dns {
		addr, err := netip.ParseAddr(d)
		if err != nil {
			return cfg, fmt.Errorf("--dns %q: not an IP address", d)
		}
		cfg.DNS = append(cfg.DNS, addr.String())
	}
	if f.cfg.Net != "" && f.cfg.Net != "none" && f.cfg.Net != "host" && !strings.HasPrefix(f.cfg.Net, "ns:") {
		// Recorded with the container: its monitor and a later rm must
		// find the same network and plugins.
		cni := f.cni
		for _, d := range f.cniBinDirs {
			cni.BinDirs = append(cni.BinDirs, filepath.SplitList(d)...)
		}
		if cni.BinDirs == nil {
			cni.BinDirs = cninet.DefaultBinDirs()
		}
		cfg.CNI = &cni
	}
	if cfg.Rootfs != "" {
		if st, err := os.Stat(cfg.Rootfs); err != nil {
			return cfg, fmt.Errorf("rootfs: %w", err)
		} else if !st.IsDir() {
			return cfg, fmt.Errorf("rootfs %s is not a directory", cfg.Rootfs)
		}
	}
	return cfg, nil
}

// envList resolves -e values: KEY=VAL as given, KEY alone from the
// caller's environment (dropped when the caller has none).
func envList(flags []string) []string {
	var out []string
	for _, e := range flags {
		if strings.Contains(e, "=") {
			out = append(out, e)
		} else if v, ok := os.LookupEnv(e); ok {
			out = append(out, e+"="+v)
		}
	}
	return out
}
