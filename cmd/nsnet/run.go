package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nsnet/nsnet/isolation"
	"github.com/nsnet/nsnet/pkg/container"
)

// runFlags are the flags of nsnet run as given.
type runFlags struct {
	detach, noInit                     bool
	id, name                           string
	volumes, uidMaps, gidMaps, sysctls []string
	env, addHosts                      []string
	cfg                                container.Config
}

func runCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD [ARGS...]",
		Short: "Run a command in a new container",
		Long: `Run CMD in a new container: new UTS, IPC, PID, mount, cgroup and network
namespaces (optionally a user namespace), its own root filesystem (--rootfs, or
a throw-away root made of the host's /usr, /bin, /sbin, /lib* and /etc read-only)
and runc's default hardening. In the foreground nsnet exits with CMD's exit
code (128+N when signal N killed it) and forwards SIGINT, SIGTERM and SIGHUP;
with -d it prints the container's id and a monitor process waits for it.
Errors of nsnet itself exit with 125.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
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
	fl.StringVar(&f.cfg.Net, "net", "none", "network: none (new namespace, loopback only), host, or ns:/path/of/netns")
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
