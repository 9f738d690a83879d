package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/nsnet/nsnet/test/internal/benchstat"
)

// targets are issues 4's and 6's bounds on nsnet's median over another tool's.
var targets = map[string]float64{"runc": 0.3, "crun": 1.0, "runc+cnitool": 0.25}

// measure runs every tool opts.n times, round-robin; iteration j starts with tool j mod
// len(tools) so none always runs first.
func measure(ctx context.Context, opts *options, tools []*tool) (*report, error) {
	samples := make([][]time.Duration, len(tools))
	prefix := "rb" + randHex(4)
	for j := range opts.n {
		for k := range tools {
			i := (j + k) % len(tools)
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("interrupted: %w", err)
			}
			d, err := tools[i].run(ctx, fmt.Sprintf("%s-%d", prefix, j))
			if err != nil {
				return nil, err
			}
			samples[i] = append(samples[i], d)
		}
		if opts.verbose && (j+1)%10 == 0 {
			fmt.Fprintf(os.Stderr, "runbench: %d/%d iterations\n", j+1, opts.n)
		}
	}
	r := &report{Runs: opts.n}
	for i, t := range tools {
		r.Results = append(r.Results, result{
			Tool: t.name, Version: t.version,
			Median: benchstat.MS(benchstat.Percentile(samples[i], 50)), P95: benchstat.MS(benchstat.Percentile(samples[i], 95)),
			Min: benchstat.MS(slices.Min(samples[i])), Floor: t.floor,
		})
	}
	r.Ratios = r.ratios()
	return r, nil
}

// result is one tool's wall-clock time to run /bin/true, in milliseconds.
type result struct {
	Tool    string  `json:"tool"`
	Version string  `json:"version"`
	Median  float64 `json:"median_ms"`
	P95     float64 `json:"p95_ms"`
	Min     float64 `json:"min_ms"`
	// Floor marks gofloor: what the design of nsnet run costs with nothing but the
	// namespaces, the chroot and the exec.
	Floor bool `json:"floor,omitempty"`
}

// ratio is nsnet's (or a floor's) time over another tool's, with the bound where it
// sets one.
type ratio struct {
	Of     string   `json:"of"`
	Over   string   `json:"over"`
	Median float64  `json:"median"`
	P95    float64  `json:"p95"`
	Target *float64 `json:"target_median,omitempty"`
	Met    *bool    `json:"target_met,omitempty"`
}

type report struct {
	Title   string   `json:"title"`
	Runs    int      `json:"runs_per_tool"`
	Results []result `json:"results"`
	Ratios  []ratio  `json:"ratios"`
	Skipped []skip   `json:"skipped,omitempty"`
}

// ratios compares nsnet (results[0]) with every other runtime, then every floor with the
// runtimes that have a target: a floor above a target shows the target is out of the
// design's reach.
func (r *report) ratios() []ratio {
	var out []ratio
	nsnet := r.Results[0]
	var floors []result
	for _, other := range r.Results[1:] {
		if other.Floor {
			floors = append(floors, other)
			continue
		}
		out = append(out, newRatio(nsnet, other))
	}
	for _, f := range floors {
		for _, other := range r.Results[1:] {
			if _, ok := targets[other.Tool]; ok && !other.Floor {
				out = append(out, newRatio(f, other))
			}
		}
	}
	return out
}

func newRatio(of, over result) ratio {
	q := ratio{Of: of.Tool, Over: over.Tool, Median: div(of.Median, over.Median), P95: div(of.P95, over.P95)}
	if t, ok := targets[over.Tool]; ok {
		met := q.Median <= t
		q.Target, q.Met = &t, &met
	}
	return q
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) error {
	fmt.Fprintln(w, "==", r.Title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "tool\tmedian\tp95\tmin\tversion\n")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%.2fms\t%.2fms\t%.2fms\t%s\n", res.Tool, res.Median, res.P95, res.Min, res.Version)
	}
	for _, q := range r.Ratios {
		verdict := ""
		if q.Target != nil {
			verdict = fmt.Sprintf("target median <= %.2fx: ", *q.Target)
			if *q.Met {
				verdict += "met"
			} else {
				verdict += "NOT met"
			}
		}
		fmt.Fprintf(tw, "%s/%s\t%.2fx\t%.2fx\t\t%s\n", q.Of, q.Over, q.Median, q.P95, verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "skipped %s: %s\n", s.Tool, s.Reason)
	}
	fmt.Fprintf(w, "%d runs per tool, interleaved round-robin; each run is one whole command, fork/exec to exit\n", r.Runs)
	return nil
}
