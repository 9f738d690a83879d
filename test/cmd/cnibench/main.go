// Command cnibench measures how nsnet's plugins' ADD and DEL latency compares with the
// reference plugins', and how it grows with the number of containers already attached. It
// runs two suites:
//
//   - plugin: bridge-lite against the reference bridge + host-local;
//   - chain: the chain bridge-lite + portmap-lite against the reference bridge + host-local +
//     portmap (v1.10.0), one published port per container (distinct host ports); the latency
//     is that of the whole chain: every plugin executed in order as libcni does (prevResult
//     passed along, runtimeConfig.portMappings given to the portmap plugin), DEL in reverse
//     order with the chain's result as prevResult.
//
// Plugins run as a runtime runs them (one exec per call, CNI env and stdin, cniVersion 1.0.0),
// each network in its own sandbox host netns pair, with the measurements of the two networks
// compared interleaved so both see the same machine noise. Every plugin uses its default
// firewall backend unless -refbackend says otherwise for the reference plugins. Run as root:
// `make bench`, or `go run ./test/cmd/cnibench -bin bin -n 10,500 -m 30 [-suites plugin,chain] [-json]`.
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

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/nsnet/nsnet/pkg/undo"
	"github.com/nsnet/nsnet/test/harness"
	"github.com/nsnet/nsnet/test/internal/benchstat"
)

func main() {
	os.Exit(run())
}

type options struct {
	ns         []int
	m          int
	suites     []string
	refBackend string
	json       bool
	binDir     string
	refDir     string
	verbose    bool
}

// suiteNames are the suites -suites accepts, in the order they run.
var suiteNames = []string{"plugin", "chain"}

func parseFlags() (*options, error) {
	var o options
	nList := flag.String("n", "10,500", "comma-separated counts of attachments that exist before measuring")
	flag.IntVar(&o.m, "m", 30, "ADD+DEL pairs measured per plugin and N")
	flag.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	flag.StringVar(&o.binDir, "bin", "", "directory with the built bridge-lite (default: build ./plugins/... into a temp dir)")
	flag.StringVar(&o.refDir, "ref", "", "directory with the reference bridge and host-local (default: install into the user cache)")
	flag.BoolVar(&o.verbose, "v", false, "report progress on stderr")
	suites := flag.String("suites", strings.Join(suiteNames, ","), "comma-separated suites to run: plugin (bridge-lite vs bridge), chain (bridge-lite+portmap-lite vs bridge+portmap)")
	flag.StringVar(&o.refBackend, "refbackend", "", `firewall backend of the reference bridge (ipMasqBackend) and portmap (backend): "" for their defaults, "nftables" or "iptables"`)
	flag.Parse()
	var asked []string
	for _, name := range strings.Split(*suites, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(suiteNames, name) {
			return nil, fmt.Errorf("invalid -suites entry %q: want %s", name, strings.Join(suiteNames, " or "))
		}
		asked = append(asked, name)
	}
	for _, name := range suiteNames {
		if slices.Contains(asked, name) {
			o.suites = append(o.suites, name)
		}
	}
	switch o.refBackend {
	case "", "nftables", "iptables":
	default:
		return nil, fmt.Errorf("invalid -refbackend %q: want nftables or iptables", o.refBackend)
	}
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
	// Output piped into a reader that quits early (| head) must not kill
	// the program before its cleanups run: with SIGPIPE caught, writes to
	// the closed pipe fail instead. A handler, unlike SIG_IGN, is not
	// inherited by the tools measured.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	// Undone in reverse order, going on past failures so one does not
	// strand the rest.
	var cleanups undo.Stack
	defer func() {
		if err := cleanups.Rollback(); err != nil {
			fmt.Fprintln(os.Stderr, "cnibench: cleanup:", err)
			code = 1
		}
	}()
	defer1 := cleanups.Push

	b, err := setup(opts, defer1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		return 1
	}
	var reports []*report
	for _, s := range b.suites {
		r, err := b.measure(ctx, s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cnibench:", err)
			return 1
		}
		reports = append(reports, r)
	}
	if opts.json {
		err = writeJSON(os.Stdout, reports)
	} else {
		err = writeTables(os.Stdout, reports)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench: writing report:", err)
		return 1
	}
	return 0
}

// bench holds the suites to run.
type bench struct {
	opts   *options
	suites []*suite
}

// suite compares two networks: nsnet's (first) and the reference (second).
type suite struct {
	name    string
	title   string
	plugins []*plugin
	netns   *netnsDir
}

// network describes one network of a suite; in conf strings {{state}} stands for the
// network's state dir and {{ipam}} for its IPAM data dir.
type network struct {
	label string
	name  string // network name, also the container ID prefix
	steps []networkStep
}

type networkStep struct {
	binary       string
	conf         string
	portMappings bool
}

func suiteNetworks(name, refBackend string) (title string, nets []network) {
	refMasq, refPortmap := "", ""
	if refBackend != "" {
		refMasq = fmt.Sprintf(`,"ipMasqBackend":%q`, refBackend)
		refPortmap = fmt.Sprintf(`,"backend":%q`, refBackend)
	}
	switch name {
	case "plugin":
		return "bridge-lite vs reference bridge + host-local", []network{
			{"bridge-lite", "benchlite", []networkStep{{"bridge-lite", `{"type":"bridge-lite","bridge":"brlite0",` +
				`"isGateway":true,"ipMasq":true,"stateDir":"{{state}}","ipam":{"type":"host-local","subnet":"10.88.0.0/16","dataDir":"{{ipam}}"}}`, false}}},
			{"bridge (reference)", "benchref", []networkStep{{"bridge", `{"type":"bridge","bridge":"brref0",` +
				`"isGateway":true,"ipMasq":true` + refMasq + `,"ipam":{"type":"host-local","subnet":"10.89.0.0/16","dataDir":"{{ipam}}"}}`, false}}},
		}
	default:
		return "chain: bridge-lite + portmap-lite vs reference bridge + host-local + portmap, one published port per container", []network{
			{"bridge-lite+portmap-lite", "benchlitepm", []networkStep{
				{"bridge-lite", `{"type":"bridge-lite","bridge":"brlitepm0","isGateway":true,"isDefaultGateway":true,` +
					`"ipMasq":true,"hairpinMode":true,"stateDir":"{{state}}","ipam":{"type":"host-local","subnet":"10.90.0.0/16","dataDir":"{{ipam}}"}}`, false},
				{"portmap-lite", `{"type":"portmap-lite","capabilities":{"portMappings":true},"stateDir":"{{state}}-portmap"}`, true},
			}},
			{"bridge+portmap (reference)", "benchrefpm", []networkStep{
				{"bridge", `{"type":"bridge","bridge":"brrefpm0","isGateway":true,"isDefaultGateway":true,` +
					`"ipMasq":true,"hairpinMode":true` + refMasq + `,"ipam":{"type":"host-local","subnet":"10.91.0.0/16","dataDir":"{{ipam}}"}}`, false},
				{"portmap", `{"type":"portmap","capabilities":{"portMappings":true}` + refPortmap + `}`, true},
			}},
		}
	}
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
	refDir := opts.refDir
	if refDir == "" {
		if refDir, err = harness.ReferencePluginsDir(); err != nil {
			return nil, fmt.Errorf("installing reference plugins: %w", err)
		}
	}
	cniPath := binDir + string(os.PathListSeparator) + refDir

	b := &bench{opts: opts}
	for _, name := range opts.suites {
		title, nets := suiteNetworks(name, opts.refBackend)
		nsDir, err := newNetnsDir()
		if err != nil {
			return nil, err
		}
		deferCleanup(nsDir.remove)
		s := &suite{name: name, title: title, netns: nsDir}
		for _, n := range nets {
			p, err := newPlugin(n, filepath.Join(tmp, n.name), binDir, refDir, cniPath, nsDir)
			if err != nil {
				return nil, err
			}
			deferCleanup(p.host.Close)
			// Registered after the host, so attachments are DELeted while their host still exists.
			deferCleanup(p.delAll)
			s.plugins = append(s.plugins, p)
		}
		b.suites = append(b.suites, s)
	}
	return b, nil
}

// newPlugin checks that the network's binaries exist and gives it a sandbox host.
func newPlugin(n network, dir, binDir, refDir, cniPath string, nsDir *netnsDir) (*plugin, error) {
	p := &plugin{label: n.label, cniPath: cniPath, netns: nsDir, prefix: n.name}
	for _, st := range n.steps {
		if _, err := invoke.FindInPath(st.binary, []string{binDir, refDir}); err != nil {
			return nil, fmt.Errorf("%s binary missing (run make build): %w", st.binary, err)
		}
		var conf map[string]any
		raw := strings.NewReplacer("{{state}}", filepath.Join(dir, "state"), "{{ipam}}", filepath.Join(dir, "ipam")).Replace(st.conf)
		if err := json.Unmarshal([]byte(raw), &conf); err != nil {
			return nil, fmt.Errorf("decoding %s config of %s: %w", st.binary, n.label, err)
		}
		conf["cniVersion"], conf["name"] = "1.0.0", n.name
		p.steps = append(p.steps, step{binary: st.binary, conf: conf, portMappings: st.portMappings})
	}
	host, err := harness.CreateHost()
	if err != nil {
		return nil, fmt.Errorf("creating sandbox host for %s: %w", n.label, err)
	}
	p.host = host
	return p, nil
}

// sample is one measured ADD+DEL pair.
type sample struct{ add, del time.Duration }

// measure runs a suite at every N, then DELs its attachments and frees its namespaces, so the
// next suite runs on an unloaded machine.
func (b *bench) measure(ctx context.Context, s *suite) (*report, error) {
	r := &report{Suite: s.name, Title: s.title, M: b.opts.m}
	for _, n := range b.opts.ns {
		for _, p := range s.plugins {
			b.progress("%s: populating %s to %d attachments", s.name, p.label, n)
			if err := p.populate(ctx, n); err != nil {
				return nil, err
			}
		}
		samples := make([][]sample, len(s.plugins))
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
				smp, err := s.plugins[i].addDel(fmt.Sprintf("m%d-%d", n, j))
				if err != nil {
					return nil, err
				}
				samples[i] = append(samples[i], smp)
			}
		}
		for i, p := range s.plugins {
			r.Results = append(r.Results, summarize(p.label, n, samples[i]))
		}
		b.progress("%s: measured N=%d", s.name, n)
	}
	var errs []error
	for _, p := range s.plugins {
		errs = append(errs, p.delAll())
	}
	errs = append(errs, s.netns.remove())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cleaning up suite %s: %w", s.name, err)
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
		ADDMedian: benchstat.MS(benchstat.Percentile(adds, 50)), ADDP95: benchstat.MS(benchstat.Percentile(adds, 95)),
		DELMedian: benchstat.MS(benchstat.Percentile(dels, 50)), DELP95: benchstat.MS(benchstat.Percentile(dels, 95)),
	}
}

// report is one suite's results.
type report struct {
	Suite   string   `json:"suite"`
	Title   string   `json:"title"`
	M       int      `json:"m"`
	Results []result `json:"results"`
}

// ratio compares nsnet (results[2k]) with the reference (results[2k+1]) at one N.
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

// suiteJSON is a report with its derived figures.
type suiteJSON struct {
	*report
	Ratios      []ratio            `json:"ratios_lite_over_reference"`
	GrowthFrom  int                `json:"add_growth_from_n"`
	GrowthTo    int                `json:"add_growth_to_n"`
	GrowthRatio map[string]float64 `json:"add_median_growth"`
}

func writeJSON(w io.Writer, reports []*report) error {
	out := make([]suiteJSON, 0, len(reports))
	for _, r := range reports {
		lo, hi := r.bounds()
		out = append(out, suiteJSON{r, r.ratios(), lo, hi, r.growth()})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Suites []suiteJSON `json:"suites"`
	}{out})
}

func writeTables(w io.Writer, reports []*report) error {
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := r.writeTable(w); err != nil {
			return err
		}
	}
	return nil
}

func (r *report) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "== %s\n", r.Title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "plugin\tN\tADD median\tADD p95\tDEL median\tDEL p95\n")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.2fms\t%.2fms\t%.2fms\t%.2fms\n",
			res.Plugin, res.N, res.ADDMedian, res.ADDP95, res.DELMedian, res.DELP95)
	}
	for _, q := range r.ratios() {
		fmt.Fprintf(tw, "lite/reference\t%d\t%.2fx\t%.2fx\t%.2fx\t%.2fx\n",
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
	fmt.Fprintf(w, "M=%d ADD+DEL pairs per network and N, one exec per plugin call, cniVersion 1.0.0\n", r.M)
	for _, p := range names {
		fmt.Fprintf(w, "%s ADD median at N=%d / at N=%d: %.2fx\n", p, hi, lo, g[p])
	}
	return nil
}
