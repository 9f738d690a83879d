package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/nsnet/nsnet/pkg/netns"
)

// confDirEnv replaces /etc/netns as the source of per-netns files; it is
// meant for tests, which must not touch the real /etc/netns.
const confDirEnv = "NSNET_NETNS_CONF_DIR"

func registry() netns.Registry {
	r := netns.Default()
	if d := os.Getenv(confDirEnv); d != "" {
		r.ConfDir = d
	}
	return r
}

func netnsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "netns",
		Short: "Manage named network namespaces, compatibly with `ip netns`",
		Long: `Manage named network namespaces, compatibly with ip netns: a namespace NAME is
pinned at /run/netns/NAME, and files in /etc/netns/NAME/ are bind-mounted over
their /etc counterparts for commands run with "nsnet netns exec".

Environment:
  ` + confDirEnv + `  directory used instead of /etc/netns (for tests)`,
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "add NAME",
			Short: "Create a network namespace",
			Args:  cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return registry().Add(args[0])
			},
		},
		&cobra.Command{
			Use:     "del NAME",
			Aliases: []string{"delete"},
			Short:   "Delete a network namespace",
			Args:    cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				return registry().Delete(args[0])
			},
		},
		&cobra.Command{
			Use:     "ls",
			Aliases: []string{"list"},
			Short:   "List network namespaces",
			Args:    cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				names, err := registry().List()
				for _, n := range names {
					fmt.Fprintln(c.OutOrStdout(), n)
				}
				return err
			},
		},
		execCommand(),
	)
	return cmd
}

func execCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec NAME [--] CMD [ARGS...]",
		Short: "Run a command in a network namespace, as `ip netns exec` does",
		Long: `Run CMD in network namespace NAME, as ip netns exec does: in a new mount
namespace, with /sys remounted for NAME and every file of /etc/netns/NAME/
bind-mounted over /etc. nsnet is replaced by CMD, so the exit code is CMD's.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			name, argv := args[0], args[1:]
			if argv[0] == "--" {
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return fmt.Errorf("no command given")
			}
			return registry().Exec(name, argv, os.Environ(), func(err error) {
				fmt.Fprintf(c.ErrOrStderr(), "nsnet: warning: %v\n", err)
			})
		},
	}
	// Everything after NAME belongs to CMD, flags included.
	cmd.Flags().SetInterspersed(false)
	return cmd
}
