package harness

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/nsnet/nsnet/pkg/veth"
)

// LeftoverOptions says what may remain in a sandbox host after DEL and where plugin state lives.
type LeftoverOptions struct {
	// AllowLinks are host links that may stay besides lo and the uplink, e.g. the bridge.
	AllowLinks []string
	// IPAMDataDirs are host-local style data dirs; their lock and last_reserved_ip.* files may stay.
	IPAMDataDirs []string
	// StateDirs are plugin state dirs; their lock files may stay.
	StateDirs []string
	// Containers must hold nothing but lo; containers already deleted are skipped.
	Containers []*NetNS
	// Baseline, when set, is a snapshot taken before the operations under test; what it already
	// held is not a leftover.
	Baseline *Snapshot
}

// Snapshot is the plugin-visible state of a sandbox host, one comparable line per item.
type Snapshot struct {
	Links          []string // host links other than lo, the uplink and allowed ones: "name (kind)"
	Nft            []string // nftables objects and rules, except the xtables tables iptables-nft owns
	IPTables       []string // "family table: rule" lines (-A rules and user-defined chains)
	Files          []string // files left in the state and IPAM dirs
	ContainerLinks []string // "netns: name (kind)" for links other than lo in the containers
}

// Empty reports whether the snapshot holds nothing.
func (s *Snapshot) Empty() bool {
	return len(s.Links)+len(s.Nft)+len(s.IPTables)+len(s.Files)+len(s.ContainerLinks) == 0
}

func (s *Snapshot) sections() []struct {
	name  string
	lines *[]string
} {
	return []struct {
		name  string
		lines *[]string
	}{
		{"host links", &s.Links},
		{"nftables", &s.Nft},
		{"iptables", &s.IPTables},
		{"files", &s.Files},
		{"container links", &s.ContainerLinks},
	}
}

// String lists every item as a "+" line under its section.
func (s *Snapshot) String() string {
	var b strings.Builder
	for _, sec := range s.sections() {
		if len(*sec.lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %s:\n", sec.name)
		for _, l := range *sec.lines {
			fmt.Fprintf(&b, "    + %s\n", l)
		}
	}
	return b.String()
}

// minus returns the items of s not in base.
func (s *Snapshot) minus(base *Snapshot) *Snapshot {
	out := &Snapshot{}
	outSecs, baseSecs := out.sections(), base.sections()
	for i, sec := range s.sections() {
		for _, l := range *sec.lines {
			if !slices.Contains(*baseSecs[i].lines, l) {
				*outSecs[i].lines = append(*outSecs[i].lines, l)
			}
		}
	}
	return out
}

// TakeSnapshot records the host's links, nftables and iptables rules, the files in the
// configured dirs and the containers' links, filtered by opts (Baseline is ignored).
func TakeSnapshot(host *Host, opts LeftoverOptions) (*Snapshot, error) {
	var s Snapshot
	var errs []error
	allowed := append([]string{"lo", UplinkName}, opts.AllowLinks...)
	links, err := linkLines(host.NetNS)
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		if !slices.Contains(allowed, l.name) {
			s.Links = append(s.Links, l.String())
		}
	}
	if out, err := host.run("nft", "list", "ruleset"); err != nil {
		errs = append(errs, err)
	} else {
		s.Nft = parseNftRuleset(string(out))
	}
	for _, fam := range []struct{ name, cmd string }{{"ipv4", "iptables-save"}, {"ipv6", "ip6tables-save"}} {
		out, err := host.run(fam.cmd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, l := range parseIPTablesSave(string(out)) {
			s.IPTables = append(s.IPTables, fam.name+" "+l)
		}
	}
	for _, d := range opts.IPAMDataDirs {
		files, err := listFiles(d, func(name string) bool {
			return name == "lock" || strings.HasPrefix(name, "last_reserved_ip.")
		})
		errs = append(errs, err)
		s.Files = append(s.Files, files...)
	}
	for _, d := range opts.StateDirs {
		files, err := listFiles(d, func(name string) bool { return name == "lock" })
		errs = append(errs, err)
		s.Files = append(s.Files, files...)
	}
	for _, c := range opts.Containers {
		if _, err := os.Stat(c.Path()); errors.Is(err, os.ErrNotExist) {
			continue
		}
		links, err := linkLines(c)
		if err != nil {
			errs = append(errs, err)
		}
		for _, l := range links {
			if l.name != "lo" {
				s.ContainerLinks = append(s.ContainerLinks, c.Name()+": "+l.String())
			}
		}
	}
	return &s, errors.Join(errs...)
}

// FindLeftovers is TakeSnapshot minus opts.Baseline.
func FindLeftovers(host *Host, opts LeftoverOptions) (*Snapshot, error) {
	s, err := TakeSnapshot(host, opts)
	if err != nil {
		return nil, err
	}
	if opts.Baseline != nil {
		s = s.minus(opts.Baseline)
	}
	return s, nil
}

// AssertNoLeftovers fails the test, listing every leftover, when the host still holds links,
// firewall rules, state or IPAM files or container interfaces beyond what opts allows.
func AssertNoLeftovers(t testing.TB, host *Host, opts LeftoverOptions) {
	t.Helper()
	s, err := FindLeftovers(host, opts)
	if err != nil {
		t.Errorf("inspecting sandbox host %s for leftovers: %v", host.Name(), err)
		return
	}
	if !s.Empty() {
		t.Errorf("leftovers in sandbox host %s:\n%s", host.Name(), s)
	}
}

type linkInfo struct{ name, kind string }

func (l linkInfo) String() string { return l.name + " (" + l.kind + ")" }

func linkLines(n *NetNS) ([]linkInfo, error) {
	nl, closeNl, err := netlinkAt(n)
	if err != nil {
		return nil, err
	}
	defer closeNl()
	var links []netlink.Link
	// A dump racing with link changes is interrupted; it is complete on a retry.
	for range 5 {
		links, err = nl.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing links in %s: %w", n.Name(), err)
	}
	out := make([]linkInfo, 0, len(links))
	for _, l := range links {
		// A pair whose other end is in a namespace being destroyed is
		// on its way out: the kernel removes it with that namespace, in
		// the background.
		if veth.PeerNetnsDying(l) {
			continue
		}
		out = append(out, linkInfo{name: l.Attrs().Name, kind: l.Type()})
	}
	return out, nil
}

// listFiles returns the files under dir whose base name skip does not match; a missing dir holds none.
func listFiles(dir string, skip func(string) bool) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && !skip(d.Name()) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return files, fmt.Errorf("listing files under %s: %w", dir, err)
	}
	return files, nil
}

// xtablesTables are the tables iptables-nft creates; their rules show up in iptables-save, and
// the empty shells it leaves behind are not leftovers of any plugin.
var xtablesTables = []string{"filter", "nat", "mangle", "raw", "security"}

var nftCounterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// parseNftRuleset turns `nft list ruleset` output into one line per table, chain, set, map or
// other object and one per rule or element line, each prefixed with its location, leaving out
// chain/set attributes (type, hook, policy, flags), comments and the xtables tables.
func parseNftRuleset(out string) []string {
	var lines []string
	var table, object string
	depth := 0
	skipTable := false
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		before := depth
		depth += strings.Count(line, "{") - strings.Count(line, "}")
		head := strings.TrimSpace(strings.TrimSuffix(line, "{"))
		switch {
		case line == "}":
		case before == 0:
			table = strings.TrimPrefix(head, "table ")
			f := strings.Fields(table)
			skipTable = len(f) == 2 && (f[0] == "ip" || f[0] == "ip6") && slices.Contains(xtablesTables, f[1])
			if !skipTable {
				lines = append(lines, "table "+table)
			}
		case before == 1 && depth > before:
			object = head
			if !skipTable {
				lines = append(lines, "table "+table+" "+object)
			}
		case before >= 2 && !skipTable && !isNftAttribute(line):
			line = nftCounterRE.ReplaceAllString(line, "counter")
			lines = append(lines, "table "+table+" "+object+": "+line)
		}
	}
	return lines
}

func isNftAttribute(line string) bool {
	for _, p := range []string{"type ", "policy ", "flags ", "hook ", "devices ", "size ", "timeout ", "gc-interval "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

var builtinChains = []string{"INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"}

// parseIPTablesSave returns "table: rule" for every -A rule and "table: :CHAIN" for every
// user-defined chain in iptables-save output.
func parseIPTablesSave(out string) []string {
	var lines []string
	table := ""
	for _, raw := range strings.Split(out, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(line, "*"):
			table = strings.TrimPrefix(line, "*")
		case strings.HasPrefix(line, "-A "):
			lines = append(lines, table+": "+line)
		case strings.HasPrefix(line, ":"):
			chain := strings.Fields(strings.TrimPrefix(line, ":"))
			if len(chain) > 0 && !slices.Contains(builtinChains, chain[0]) {
				lines = append(lines, table+": :"+chain[0])
			}
		}
	}
	return lines
}
