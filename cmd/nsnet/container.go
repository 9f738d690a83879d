package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/container"
)

// stateRoot is the --root flag, shared by the container commands.
var stateRoot string

func addRootFlag(root *cobra.Command) {
	def := os.Getenv(container.RootEnv)
	if def == "" {
		def = container.DefaultRoot
	}
	root.PersistentFlags().StringVar(&stateRoot, "root", def,
		"directory of container state (env "+container.RootEnv+", meant for tests)")
}

func store() container.Store { return container.Store{Root: stateRoot} }

func psCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List containers",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			list, err := store().List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "CONTAINER ID\tNAME\tSTATUS\tCOMMAND\tCREATED\tIPS\tPORTS")
			for _, st := range list {
				if !all && st.Status == container.Stopped {
					continue
				}
				ips, ports := networkText(st)
				fmt.Fprintf(w, "%s\t%s\t%s\t%q\t%s\t%s\t%s\n", st.ID, st.Name, statusText(st),
					strings.Join(st.Config.Args, " "), st.Created.Local().Format(time.DateTime), ips, ports)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show stopped containers too")
	return cmd
}

// networkText is a container's addresses and published ports as ps shows
// them ("-" for none): "10.88.0.2", "0.0.0.0:8080->80/tcp".
func networkText(st *container.State) (ips, ports string) {
	ips, ports = "-", "-"
	nw := st.Network
	if nw == nil {
		return ips, ports
	}
	var addrs, maps []string
	for _, ip := range nw.IPs {
		addr, _, _ := strings.Cut(ip, "/")
		addrs = append(addrs, addr)
	}
	for _, p := range nw.Ports {
		hostIP := p.HostIP
		if hostIP == "" {
			hostIP = "0.0.0.0"
		}
		maps = append(maps, fmt.Sprintf("%s->%d/%s", net.JoinHostPort(hostIP, strconv.Itoa(p.HostPort)), p.ContainerPort, p.Protocol))
	}
	if len(addrs) > 0 {
		ips = strings.Join(addrs, ",")
	}
	if len(maps) > 0 {
		ports = strings.Join(maps, ",")
	}
	return ips, ports
}

func statusText(st *container.State) string {
	if st.Status == container.Stopped && st.ExitCode != nil {
		return fmt.Sprintf("exited (%d)", *st.ExitCode)
	}
	if st.Status == container.Running && st.Paused {
		return "paused"
	}
	return string(st.Status)
}

func execContainerCommand() *cobra.Command {
	var env []string
	var cwd string
	var tty bool
	cmd := &cobra.Command{
		Use:   "exec [flags] ID -- CMD [ARGS...]",
		Short: "Run a command in a running container",
		Long: `Run CMD in all namespaces of running container ID (by id, unique id prefix or
name), with its environment and capabilities. The exit code is CMD's.

In a container run with --userns, the container's init starts CMD, so it is in
the container's user namespace too. With --userns and --no-init, CMD joins every
other namespace and runs as the host uid the container's root maps to, without
capabilities.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			// Flag parsing stops at ID, so a "--" after it is still there.
			argv := args[1:]
			if argv[0] == "--" {
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return errors.New("exec: no command given")
			}
			relay := container.NewSignalRelay()
			defer relay.Stop()
			relay.Ready()
			p, err := store().Exec(args[0], argv, envList(env), cwd, tty,
				container.Stdio{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
			if err != nil {
				return err
			}
			relay.Forward(p)
			code, err := p.Wait()
			if err != nil {
				return err
			}
			return exitCode(code)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable KEY=VAL (KEY alone: the caller's value)")
	cmd.Flags().StringVarP(&cwd, "workdir", "w", "", "working directory inside the container")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give CMD a terminal")
	return cmd
}

func killCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "kill ID [SIGNAL]",
		Short: "Send a signal (default SIGTERM) to a container",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(_ *cobra.Command, args []string) error {
			sig := unix.SIGTERM
			if len(args) == 2 {
				var err error
				if sig, err = parseSignal(args[1]); err != nil {
					return err
				}
			}
			return store().Kill(args[0], sig)
		},
	}
}

// parseSignal accepts a number, "TERM" or "SIGTERM".
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("bad signal %q", s)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("bad signal %q", s)
	}
	return sig, nil
}

func rmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] ID...",
		Short: "Remove containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var errs []error
			for _, ref := range args {
				errs = append(errs, store().Remove(ref, force))
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

func inspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "Print a container's state as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			st, err := store().Load(args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(c.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
}

// monitorCommand is what `nsnet run -d` starts to watch the container; it
// is not for users.
func monitorCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "container-monitor ID",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			ready := os.NewFile(3, "ready")
			if ready == nil {
				return errors.New("container-monitor is started by nsnet run -d")
			}
			return exitCode(store().Monitor(args[0], ready))
		},
	}
}

func gcCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "Clean up after containers whose nsnet was killed",
		Long: `Detach every container whose processes are gone from its CNI network (CNI DEL,
then its netns is released) and remove the state of those run with --rm. Running
containers, and those whose nsnet is still finishing them, are left alone.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			done, err := store().GC()
			for _, d := range done {
				var what []string
				if d.Network != "" {
					what = append(what, "detached from "+d.Network)
				}
				if d.Removed {
					what = append(what, "removed")
				}
				fmt.Fprintf(c.OutOrStdout(), "%s\t%s\t%s\n", d.ID, d.Name, strings.Join(what, ", "))
			}
			return err
		},
	}
}
