// Command nsnet is nsnet's command-line runtime. For now it manages named
// network namespaces compatibly with `ip netns`.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "nsnet",
		Short:         "nsnet container networking runtime",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(netnsCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "nsnet: %v\n", err)
		os.Exit(1)
	}
}
