package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/spf13/cobra"

	"github.com/nsnet/nsnet/pkg/cninet"
	"github.com/nsnet/nsnet/pkg/netns"
)

// cniRootEnv replaces cninet.DefaultStateRoot, mainly for tests.
const cniRootEnv = "NSNET_CNI_ROOT"

// cniFlags are the flags every `nsnet cni` command shares.
type cniFlags struct {
	confDir   string
	binDirs   []string
	stateRoot string
	cacheDir  string
}

func (f *cniFlags) load(name string) (*cninet.Network, error) {
	var bins []string
	for _, d := range f.binDirs {
		bins = append(bins, filepath.SplitList(d)...)
	}
	return cninet.Load(name, f.confDir, bins, cninet.Dirs{StateRoot: f.stateRoot, CacheDir: f.cacheDir})
}

// cniRunE reports a failure itself and exits 1, as `nsnet netns` does,
// rather than with the container-runtime status main uses.
func cniRunE(f func(c *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		if err := f(c, args); err != nil {
			fmt.Fprintf(c.ErrOrStderr(), "nsnet: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return exitCode(1)
		}
		return nil
	}
}

func cniCommand() *cobra.Command {
	f := &cniFlags{}
	root := os.Getenv(cniRootEnv)
	if root == "" {
		root = cninet.DefaultStateRoot
	}
	cmd := &cobra.Command{
		Use:   "cni",
		Short: "Run CNI operations on a network namespace, like cnitool",
		Long: `Attach network namespaces to CNI networks through libcni, the way nsnet run --net
does. NET is a network list in --conf-dir; "` + cninet.DefaultNetwork + `" falls back to nsnet's built-in
network (bridge ` + cninet.DefaultBridge + `, a free private subnet, masquerade, host ports) when no
file defines it. NETNS is a path or a name under /run/netns.

Environment:
  ` + cniRootEnv + `  state root used instead of ` + cninet.DefaultStateRoot + ` (for tests)`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.confDir, "conf-dir", cninet.DefaultConfDir, "directory of network configuration lists")
	pf.StringArrayVar(&f.binDirs, "bin-dir", nil,
		"directory of CNI plugins, repeatable or colon-separated (default "+cninet.DefaultBinDir+", then nsnet's own directory)")
	pf.StringVar(&f.stateRoot, "state-root", root,
		"directory of the built-in network's state and of the result cache (env "+cniRootEnv+")")
	pf.StringVar(&f.cacheDir, "cache-dir", "", "libcni result cache (default STATE-ROOT/cache)")
	cmd.AddCommand(cniAddCommand(f), cniCheckDelCommand(f, "check"), cniCheckDelCommand(f, "del"),
		cniGCCommand(f), cniStatusCommand(f))
	return cmd
}

// attachFlags name one attachment of a netns.
type attachFlags struct {
	ifName string
	id     string
}

func (a *attachFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.ifName, "if", "eth0", "interface name inside the netns")
	cmd.Flags().StringVar(&a.id, "id", "", "container ID (default: derived from the netns path)")
}

// resolve returns the netns path and container ID; like cnitool, the
// default ID is a hash of the path, so add and del of one netns agree.
func (a *attachFlags) resolve(arg string) (path, id string) {
	path = arg
	if !strings.ContainsRune(arg, '/') {
		path = netns.Default().Path(arg)
	}
	if id = a.id; id == "" {
		sum := sha256.Sum256([]byte(path))
		id = "nsnet-" + hex.EncodeToString(sum[:])[:14]
	}
	return path, id
}

func cniAddCommand(f *cniFlags) *cobra.Command {
	var (
		a       attachFlags
		capArgs string
		publish []string
		cniArgs string
		jsonOut bool
		ipFlags []string
		macFlag string
	)
	cmd := &cobra.Command{
		Use:   "add NET NETNS",
		Short: "Attach a netns to a network (CNI ADD) and print the result",
		Args:  cobra.ExactArgs(2),
		RunE: cniRunE(func(c *cobra.Command, args []string) error {
			var o cninet.Options
			if capArgs != "" {
				if err := json.Unmarshal([]byte(capArgs), &o.Capabilities); err != nil {
					return fmt.Errorf("--cap-args: %w", err)
				}
			}
			for _, p := range publish {
				ms, err := cninet.ParsePublish(p)
				if err != nil {
					return err
				}
				o.PortMappings = append(o.PortMappings, ms...)
			}
			o.IPs, o.MAC = ipFlags, macFlag
			var err error
			if o.Args, err = parseCNIArgs(cniArgs); err != nil {
				return err
			}
			n, err := f.load(args[0])
			if err != nil {
				return err
			}
			path, id := a.resolve(args[1])
			res, err := cninet.Attach(context.Background(), n, id, path, a.ifName, o)
			if err != nil {
				return err
			}
			if jsonOut {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return printResult(c.OutOrStdout(), res)
		}),
	}
	a.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&capArgs, "cap-args", "", `capability args as JSON, e.g. '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}'`)
	fl.StringArrayVarP(&publish, "publish", "p", nil,
		"publish [hostIP:]hostPort:containerPort[/proto] (ranges a-b allowed; repeatable; replaces portMappings of --cap-args)")
	fl.StringArrayVar(&ipFlags, "ip", nil, "request this address (runtimeConfig.ips; repeatable)")
	fl.StringVar(&macFlag, "mac", "", "request this MAC address (runtimeConfig.mac)")
	fl.StringVar(&cniArgs, "args", "", "CNI_ARGS, K=V;K2=V2")
	fl.BoolVar(&jsonOut, "json", false, "print the CNI result as JSON")
	return cmd
}

func cniCheckDelCommand(f *cniFlags, verb string) *cobra.Command {
	var a attachFlags
	short := map[string]string{
		"check": "Check an attachment (CNI CHECK) with the config and args it was added with",
		"del":   "Detach a netns from a network (CNI DEL); the netns may be gone already",
	}[verb]
	cmd := &cobra.Command{
		Use:   verb + " NET NETNS",
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: cniRunE(func(c *cobra.Command, args []string) error {
			n, err := f.load(args[0])
			if err != nil {
				return err
			}
			path, id := a.resolve(args[1])
			if verb == "check" {
				return cninet.Check(context.Background(), n, id, path, a.ifName)
			}
			return cninet.Detach(context.Background(), n, id, path, a.ifName)
		}),
	}
	a.register(cmd)
	return cmd
}

func cniGCCommand(f *cniFlags) *cobra.Command {
	var valid []string
	cmd := &cobra.Command{
		Use:   "gc NET",
		Short: "Delete cached attachments not listed with --valid, then run CNI GC",
		Args:  cobra.ExactArgs(1),
		RunE: cniRunE(func(c *cobra.Command, args []string) error {
			var keep []cninet.Attachment
			for _, v := range valid {
				id, ifName, ok := strings.Cut(v, "/")
				if !ok || id == "" || ifName == "" {
					return fmt.Errorf("--valid %q: want CONTAINER-ID/IFNAME", v)
				}
				keep = append(keep, cninet.Attachment{ContainerID: id, IfName: ifName})
			}
			n, err := f.load(args[0])
			if err != nil {
				return err
			}
			return cninet.GC(context.Background(), n, keep)
		}),
	}
	cmd.Flags().StringArrayVar(&valid, "valid", nil, "attachment to keep, CONTAINER-ID/IFNAME (repeatable)")
	return cmd
}

func cniStatusCommand(f *cniFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status NET",
		Short: "Ask the network's plugins whether they can take ADDs (CNI STATUS)",
		Args:  cobra.ExactArgs(1),
		RunE: cniRunE(func(c *cobra.Command, args []string) error {
			n, err := f.load(args[0])
			if err != nil {
				return err
			}
			if err := cninet.Status(context.Background(), n); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: ready\n", n.Name())
			return nil
		}),
	}
}

func parseCNIArgs(s string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--args %q: want K=V;K2=V2", s)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// printResult shows one line per address of the result's sandbox
// interfaces (and per sandbox interface without one).
func printResult(w io.Writer, res *types100.Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tADDRESS\tGATEWAY\tMAC")
	shown := map[int]bool{}
	for _, ip := range res.IPs {
		name, mac := "-", "-"
		if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) {
			i := res.Interfaces[*ip.Interface]
			if i.Sandbox == "" {
				continue
			}
			name, mac = i.Name, i.Mac
			shown[*ip.Interface] = true
		}
		gw := "-"
		if ip.Gateway != nil {
			gw = ip.Gateway.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, ip.Address.String(), gw, mac)
	}
	for i, intf := range res.Interfaces {
		if intf.Sandbox != "" && !shown[i] {
			fmt.Fprintf(tw, "%s\t-\t-\t%s\n", intf.Name, intf.Mac)
		}
	}
	return tw.Flush()
}
