package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nsnet/nsnet/isolation/cgroups"
	"github.com/nsnet/nsnet/pkg/container"
)

// resourceFlags are the cgroup limit flags of run and update, as given.
type resourceFlags struct {
	memory, memorySwap, cpus string
	cpuShares                uint64
	cpusetCpus, cpusetMems   string
	pidsLimit                int64
	blkioWeight              uint16
	readBps, writeBps        []string
}

func (f *resourceFlags) register(fl *pflag.FlagSet) {
	fl.StringVarP(&f.memory, "memory", "m", "", "memory limit, e.g. 64m, 1g (-1: unlimited)")
	fl.StringVar(&f.memorySwap, "memory-swap", "", "memory plus swap limit (-1: unlimited swap)")
	fl.StringVar(&f.cpus, "cpus", "", "CPU time share, e.g. 0.5 or 1.5 CPUs (-1: unlimited)")
	fl.Uint64Var(&f.cpuShares, "cpu-shares", 0, "relative CPU weight, 2..262144 (default 1024)")
	fl.StringVar(&f.cpusetCpus, "cpuset-cpus", "", "CPUs to run on, e.g. 0-1,3")
	fl.StringVar(&f.cpusetMems, "cpuset-mems", "", "memory nodes to allocate from, e.g. 0")
	fl.Int64Var(&f.pidsLimit, "pids-limit", 0, "maximum number of tasks (-1: unlimited)")
	fl.Uint16Var(&f.blkioWeight, "blkio-weight", 0, "relative block I/O weight, 10..1000")
	fl.StringArrayVar(&f.readBps, "device-read-bps", nil, "limit reads from a block device, PATH:RATE, e.g. /dev/vda:1mb (repeatable)")
	fl.StringArrayVar(&f.writeBps, "device-write-bps", nil, "limit writes to a block device, PATH:RATE (repeatable)")
}

// resources turns the flags into limits; validation against the host
// happens when the cgroup is planned.
func (f *resourceFlags) resources() (cgroups.Resources, error) {
	var r cgroups.Resources
	var err error
	if r.Memory, err = sizeFlag("memory", f.memory); err != nil {
		return r, err
	}
	if r.MemorySwap, err = sizeFlag("memory-swap", f.memorySwap); err != nil {
		return r, err
	}
	if f.cpus != "" {
		if r.CPUs, err = strconv.ParseFloat(f.cpus, 64); err != nil {
			return r, fmt.Errorf("--cpus %q: not a number", f.cpus)
		}
		if r.CPUs == 0 {
			return r, fmt.Errorf("--cpus 0: want a positive number of CPUs, or -1 for no limit")
		}
	}
	r.CPUShares, r.CpusetCpus, r.CpusetMems = f.cpuShares, f.cpusetCpus, f.cpusetMems
	r.PidsLimit, r.BlkioWeight = f.pidsLimit, f.blkioWeight
	for _, v := range f.readBps {
		d, err := cgroups.ParseDeviceRate(v)
		if err != nil {
			return r, fmt.Errorf("--device-read-bps: %w", err)
		}
		r.DeviceReadBps = append(r.DeviceReadBps, d)
	}
	for _, v := range f.writeBps {
		d, err := cgroups.ParseDeviceRate(v)
		if err != nil {
			return r, fmt.Errorf("--device-write-bps: %w", err)
		}
		r.DeviceWriteBps = append(r.DeviceWriteBps, d)
	}
	return r, nil
}

// sizeFlag parses a byte size flag; "-1" means unlimited.
func sizeFlag(name, v string) (int64, error) {
	switch v {
	case "":
		return 0, nil
	case "-1":
		return cgroups.Unlimited, nil
	}
	n, err := cgroups.ParseBytes(v)
	if err != nil {
		return 0, fmt.Errorf("--%s: %w", name, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("--%s 0: want a positive size, or -1 for no limit", name)
	}
	return n, nil
}

func statsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats ID...",
		Short: "Show the resource use of running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			type row struct {
				ID    string        `json:"id"`
				Name  string        `json:"name"`
				Stats cgroups.Stats `json:"stats"`
				Limit int64         `json:"memory_limit,omitempty"`
			}
			var rows []row
			for _, ref := range args {
				st, s, err := store().Stats(ref)
				if err != nil {
					return err
				}
				rows = append(rows, row{ID: st.ID, Name: st.Name, Stats: s, Limit: st.Config.Resources.Memory})
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "CONTAINER ID\tNAME\tMEM USAGE / LIMIT\tMEM PEAK\tCPU TIME\tPIDS\tTHROTTLED\tOOM KILLS")
			for _, r := range rows {
				limit := "-"
				if r.Limit > 0 {
					limit = humanBytes(uint64(r.Limit))
				}
				fmt.Fprintf(w, "%s\t%s\t%s / %s\t%s\t%s\t%d\t%d/%d (%s)\t%d\n", r.ID, r.Name,
					humanBytes(r.Stats.MemoryUsage), limit, humanBytes(r.Stats.MemoryPeak),
					time.Duration(r.Stats.CPUUsage).Round(time.Millisecond), r.Stats.Pids,
					r.Stats.NrThrottled, r.Stats.NrPeriods, time.Duration(r.Stats.ThrottledTime).Round(time.Millisecond),
					r.Stats.OOMKills)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, units := float64(n)/unit, "KMGTPE"
	i := 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + string(units[i]) + "iB"
}

func pauseCommand() *cobra.Command {
	return eachContainerCommand("pause ID...", "Freeze every process of running containers", container.Store.Pause)
}

func resumeCommand() *cobra.Command {
	cmd := eachContainerCommand("resume ID...", "Thaw paused containers", container.Store.Resume)
	cmd.Aliases = []string{"unpause"}
	return cmd
}

// eachContainerCommand is a command that does do to every container named.
func eachContainerCommand(use, short string, do func(s container.Store, ref string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return eachContainer(args, do)
		},
	}
}

// eachContainer does do to every container of refs, in the store --root
// names, stopping at the first error.
func eachContainer(refs []string, do func(s container.Store, ref string) error) error {
	for _, ref := range refs {
		if err := do(store(), ref); err != nil {
			return err
		}
	}
	return nil
}

func updateCommand() *cobra.Command {
	var f resourceFlags
	cmd := &cobra.Command{
		Use:   "update [flags] ID...",
		Short: "Change the cgroup limits of running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r, err := f.resources()
			if err != nil {
				return err
			}
			if r.IsZero() {
				return fmt.Errorf("nothing to update: give at least one limit flag")
			}
			return eachContainer(args, func(s container.Store, ref string) error { return s.Update(ref, r) })
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func infoCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show how nsnet would run containers on this host",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			type hierarchy struct {
				Mountpoint  string   `json:"mountpoint"`
				Controllers []string `json:"controllers,omitempty"`
				Name        string   `json:"name,omitempty"`
				Own         string   `json:"own"`
			}
			info := struct {
				CgroupVersion string      `json:"cgroupVersion"`
				CgroupMode    string      `json:"cgroupMode"`
				CgroupManager string      `json:"cgroupManager"`
				Hierarchies   []hierarchy `json:"hierarchies,omitempty"`
				StateRoot     string      `json:"stateRoot"`
			}{CgroupVersion: "none", CgroupMode: "none", StateRoot: stateRoot}
			l, err := cgroups.DetectHost()
			if err == nil {
				info.CgroupMode, info.CgroupManager = l.Mode.String(), cgroups.DefaultDriver(l)
				info.CgroupVersion = "v1"
				if l.Mode == cgroups.ModeUnified {
					info.CgroupVersion = "v2"
				}
				for _, h := range l.V1 {
					info.Hierarchies = append(info.Hierarchies, hierarchy{h.Mountpoint, h.Controllers, h.Name, h.Own})
				}
				if l.V2 != nil {
					info.Hierarchies = append(info.Hierarchies, hierarchy{Mountpoint: l.V2.Mountpoint, Own: l.V2.Own})
				}
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			w := c.OutOrStdout()
			fmt.Fprintf(w, "cgroup version: %s (%s)\ncgroup manager: %s\nstate root: %s\n",
				info.CgroupVersion, info.CgroupMode, info.CgroupManager, info.StateRoot)
			for _, h := range info.Hierarchies {
				what := fmt.Sprint(h.Controllers)
				if h.Name != "" {
					what = "name=" + h.Name
				}
				fmt.Fprintf(w, "  %s %s own %s\n", h.Mountpoint, what, h.Own)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
