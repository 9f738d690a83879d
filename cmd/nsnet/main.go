// The runtime's cgroup-aware GOMAXPROCS keeps the cgroup's CPU limit
// files open and re-reads them: in the setup child, which becomes the
// container's init, those would be the host's cgroupfs files.
//
//go:debug containermaxprocs=0

// Command nsnet is nsnet's command-line runtime: it runs containers
// (nsnet run, ps, exec, kill, rm, inspect) and manages named network
// namespaces compatibly with `ip netns`.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nsnet/nsnet/isolation"
)

// exitCode is returned by a command whose exit code is a container's: main
// exits with it and prints nothing.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func main() {
	// A copy of nsnet started as a container's setup child, init or exec
	// child does its work here and never returns.
	isolation.Reexec()

	root := &cobra.Command{
		Use:           "nsnet",
		Short:         "nsnet container networking runtime",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addRootFlag(root)
	root.AddCommand(netnsCommand(), cniCommand(), runCommand(), psCommand(), execContainerCommand(),
		killCommand(), rmCommand(), gcCommand(), inspectCommand(), monitorCommand(),
		statsCommand(), pauseCommand(), resumeCommand(), updateCommand(), infoCommand())
	cmd, err := root.ExecuteC()
	if err == nil {
		return
	}
	var code exitCode
	if errors.As(err, &code) {
		os.Exit(int(code))
	}
	fmt.Fprintf(os.Stderr, "nsnet: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	if isToolCommand(cmd) {
		os.Exit(1)
	}
	// Container commands fail the way docker and podman do for errors
	// of the runtime rather than of the command.
	os.Exit(isolation.ExitSetupFailed)
}

// isToolCommand reports whether cmd belongs to the netns or cni tools,
// which exit 1 on errors as ip and cnitool do.
func isToolCommand(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Name() == "netns" || c.Name() == "cni" {
			return true
		}
	}
	return false
}
