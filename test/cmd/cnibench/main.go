// Command cnibench measures how bridge-lite's ADD and DEL latency compares with the reference
// bridge + host-local plugins, and how it grows with the number of containers already attached.
//
// Both plugins run as a runtime runs them (one exec per call, CNI env and stdin, cniVersion
// 1.0.0), each in its own sandbox host netns pair, with their measurements interleaved so both
// see the same machine noise. Run as root: `make bench`, or
// `go run ./test/cmd/cnibench -bin bin -n 10,500 -m 30 [-json]`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nsnet/nsnet/test/harness"
)

func main() {
	os.Exit(run())
}

type options struct {
	ns      []int
	m       int
	json    bool
	binDir  string
	refDir  string
	verbose bool
}

func parseFlags() (*options, error) {
	var o options
	nList := flag.String("n", "10,500", "comma-separated counts of attachments that exist before measuring")
	flag.IntVar(&o.m, "m", 30, "ADD+DEL pairs measured per plugin and N")
	flag.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	flag.StringVar(&o.binDir, "bin", "", "directory with the built bridge-lite (default: build ./plugins/... into a temp dir)")
	flag.StringVar(&o.refDir, "ref", "", "directory with the reference bridge and host-local (default: install into the user cache)")
	flag.BoolVar(&o.verbose, "v", false, "report progress on stderr")
	flag.Parse()
	for _, s := range strings.Split(*nList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid -n entry %q: want a non-negative integer", s)
		}
		o.ns = append(o.ns, n)
	}
	slices.Sort(o.ns)
	o.ns = slices.Compact(o.ns)
	if len(o.ns) == 0 || o.m < 1 {
		return nil, errors.New("need at least one -n value and -m >= 1")
	}
	return &o, nil
}

func run() (code int) {
	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cnibench: must run as root (it creates network namespaces)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var cleanups []func() error
	defer func() {
		// Undo in reverse order, and keep going so one failure does not strand the rest.
		for i := len(cleanups) - 1; i >= 0; i-- {
			if err := cleanups[i](); err != nil {
				fmt.Fprintln(os.Stderr, "cnibench: cleanup:", err)
				code = 1
			}
		}
	}()
	defer1 := func(f func() error) { cleanups = append(cleanups, f) }

	b, err := setup(opts, defer1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		return 1
	}
	report, err := b.measure(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		return 1
	}
	if opts.json {
		err = report.writeJSON(os.Stdout)
	} else {
		err = report.writeTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench: writing report:", err)
		return 1
	}
	return 0
}

// bench holds the two plugins under comparison.
type bench struct {
	opts    *options
	plugins []*plugin
}

func setup(opts *options, deferCleanup func(func() error)) (*bench, error) {
	tmp, err := os.MkdirTemp("", "cnibench-")
	if err != nil {
		return nil, fmt.Errorf("creating temp dir: %w", err)
	}
	deferCleanup(func() error { return os.RemoveAll(tmp) })

	binDir := opts.binDir
	if binDir == "" {
		binDir = filepath.Join(tmp, "bin")
		if err := os.Mkdir(binDir, 0o755); err != nil {
			return nil, err
		}
		if err := harness.BuildProjectPlugins(binDir); err != nil {
			return nil, fmt.Errorf("building project plugins: %w", err)
		}
	}
	if binDir, err = filepath.Abs(binDir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(binDir, "bridge-lite")); err != nil {
		return nil, fmt.Errorf("bridge-lite binary missing (run make build): %w", err)
	}
	refDir := opts.refDir
	if refDir == "" {
		if refDir, err = harness.ReferencePluginsDir(); err != nil {
			return nil, fmt.Errorf("installing reference plugins: %w", err)
		}
	}
	cniPath := binDir + string(os.PathListSeparator) + refDir

	nsDir, err := newNetnsDir()
	if err != nil {
		return nil, err
	}
	deferCleanup(nsDir.remove)

	b := &bench{opts: opts}
	for _, spec := range []struct{ label, binary, name, conf string }{
		{"bridge-lite", "bridge-lite", "benchlite", `{"cniVersion":"1.0.0","name":"benchlite","type":"bridge-lite","bridge":"brlite0",` +
			`"isGateway":true,"ipMasq":true,"stateDir":%[1]q,"ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":%[2]q}}`},
		{"bridge (reference)", "bridge", "benchref", `{"cniVersion":"1.0.0","name":"benchref","type":"bridge","bridge":"brref0",` +
			`"isGateway":true,"ipMasq":true,"ipam":{"type":"host-local","subnet":"10.89.0.0/16","dataDir":%[2]q}}`},
	} {
		dir := filepath.Join(tmp, spec.name)
		host, err := harness.CreateHost()
		if err != nil {
			return nil, fmt.Errorf("creating sandbox host for %s: %w", spec.label, err)
		}
		deferCleanup(host.Close)
		p := &plugin{
			label:   spec.label,
			binary:  spec.binary,
			host:    host,
			cniPath: cniPath,
			conf:    []byte(fmt.Sprintf(spec.conf, filepath.Join(dir, "state"), filepath.Join(dir, "ipam"))),
			netns:   nsDir,
			prefix:  spec.name,
		}
		// Registered after the host, so attachments are DELeted while their host still exists.
		deferCleanup(p.delAll)
		b.plugins = append(b.plugins, p)
	}
	return b, nil
}

// sample is one measured ADD+DEL pair.
type sample struct{ add, del time.Duration }

func (b *bench) measure(ctx context.Context) (*report, error) {
	r := &report{M: b.opts.m}
	for _, n := range b.opts.ns {
		for _, p := range b.plugins {
			b.progress("populating %s to %d attachments", p.label, n)
			if err := p.populate(ctx, n); err != nil {
				return nil, err
			}
		}
		samples := make([][]sample, len(b.plugins))
		for j := range b.opts.m {
			// Alternate which plugin goes first so neither always runs on a warmer machine.
			order := []int{0, 1}
			if j%2 == 1 {
				order = []int{1, 0}
			}
			for _, i := range order {
				if err := ctx.Err(); err != nil {
					return nil, fmt.Errorf("interrupted: %w", err)
				}
				s, err := b.plugins[i].addDel(fmt.Sprintf("m%d-%d", n, j))
				if err != nil {
					return nil, err
				}
				samples[i] = append(samples[i], s)
			}
		}
		for i, p := range b.plugins {
			r.Results = append(r.Results, summarize(p.label, n, samples[i]))
		}
		b.progress("measured N=%d", n)
	}
	return r, nil
}

func (b *bench) progress(format string, args ...any) {
	if b.opts.verbose {
		fmt.Fprintf(os.Stderr, "cnibench: "+format+"\n", args...)
	}
}

// result is the latency summary of one plugin at one N, in milliseconds.
type result struct {
	Plugin    string  `json:"plugin"`
	N         int     `json:"n"`
	ADDMedian float64 `json:"add_median_ms"`
	ADDP95    float64 `json:"add_p95_ms"`
	DELMedian float64 `json:"del_median_ms"`
	DELP95    float64 `json:"del_p95_ms"`
}

func summarize(label string, n int, samples []sample) result {
	adds := make([]time.Duration, len(samples))
	dels := make([]time.Duration, len(samples))
	for i, s := range samples {
		adds[i], dels[i] = s.add, s.del
	}
	return result{
		Plugin: label, N: n,
		ADDMedian: ms(percentile(adds, 50)), ADDP95: ms(percentile(adds, 95)),
		DELMedian: ms(percentile(dels, 50)), DELP95: ms(percentile(dels, 95)),
	}
}

// percentile is the nearest-rank percentile.
func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type report struct {
	M       int      `json:"m"`
	Results []result `json:"results"`
}

// ratio compares bridge-lite (results[2k]) with the reference (results[2k+1]) at one N.
type ratio struct {
	N         int     `json:"n"`
	ADDMedian float64 `json:"add_median"`
	ADDP95    float64 `json:"add_p95"`
	DELMedian float64 `json:"del_median"`
	DELP95    float64 `json:"del_p95"`
}

func (r *report) ratios() []ratio {
	var out []ratio
	for i := 0; i+1 < len(r.Results); i += 2 {
		lite, ref := r.Results[i], r.Results[i+1]
		out = append(out, ratio{
			N:         lite.N,
			ADDMedian: div(lite.ADDMedian, ref.ADDMedian), ADDP95: div(lite.ADDP95, ref.ADDP95),
			DELMedian: div(lite.DELMedian, ref.DELMedian), DELP95: div(lite.DELP95, ref.DELP95),
		})
	}
	return out
}

// growth is each plugin's ADD median at the largest N divided by that at the smallest N.
func (r *report) growth() map[string]float64 {
	first, last := map[string]float64{}, map[string]float64{}
	for _, res := range r.Results {
		if _, ok := first[res.Plugin]; !ok {
			first[res.Plugin] = res.ADDMedian
		}
		last[res.Plugin] = res.ADDMedian
	}
	out := map[string]float64{}
	for p := range first {
		out[p] = div(last[p], first[p])
	}
	return out
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (r *report) bounds() (lo, hi int) {
	lo, hi = r.Results[0].N, r.Results[len(r.Results)-1].N
	return lo, hi
}

func (r *report) writeJSON(w io.Writer) error {
	lo, hi := r.bounds()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		*report
		Ratios      []ratio            `json:"ratios_lite_over_reference"`
		GrowthFrom  int                `json:"add_growth_from_n"`
		GrowthTo    int                `json:"add_growth_to_n"`
		GrowthRatio map[string]float64 `json:"add_median_growth"`
	}{r, r.ratios(), lo, hi, r.growth()})
}

func (r *report) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "plugin\tN\tADD median\tADD p95\tDEL median\tDEL p95\n")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.2fms\t%.2fms\t%.2fms\t%.2fms\n",
			res.Plugin, res.N, res.ADDMedian, res.ADDP95, res.DELMedian, res.DELP95)
	}
	for _, q := range r.ratios() {
		fmt.Fprintf(tw, "bridge-lite/reference\t%d\t%.2fx\t%.2fx\t%.2fx\t%.2fx\n",
			q.N, q.ADDMedian, q.ADDP95, q.DELMedian, q.DELP95)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	lo, hi := r.bounds()
	g := r.growth()
	names := make([]string, 0, len(g))
	for p := range g {
		names = append(names, p)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "\nM=%d ADD+DEL pairs per plugin and N, one exec per call, cniVersion 1.0.0\n", r.M)
	for _, p := range names {
		fmt.Fprintf(w, "%s ADD median at N=%d / at N=%d: %.2fx\n", p, hi, lo, g[p])
	}
	return nil
}
