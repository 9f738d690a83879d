package nat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

const (
	iptNatTable     = "nat"
	iptPostrouting  = "POSTROUTING"
	iptTopChain     = "NSNET-MASQ"
	iptNetChainPfx  = "NSNET-M-"
	iptJumpComment  = "nsnet masquerade"
	iptEntryComment = "nsnet-masq "
	// xt_comment keeps 256 bytes including the terminating NUL.
	iptCommentMax = 255
	// Racing Adds may append the POSTROUTING jump twice; Del removes every copy, up to this many.
	iptMaxJumpCopies = 16
)

// iptHandles runs iptables and ip6tables for the iptables backends.
type iptHandles struct {
	v4 *iptables.IPTables
	// ip6tables is optional on an IPv4-only host; its absence only fails IPv6 entries.
	v6    *iptables.IPTables
	v6Err error
}

func newIptHandles() (iptHandles, error) {
	v4, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
	if err != nil {
		return iptHandles{}, fmt.Errorf("iptables: %w", err)
	}
	h := iptHandles{v4: v4}
	h.v6, h.v6Err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv6))
	return h, nil
}

func (h iptHandles) handle(v6 bool) (*iptables.IPTables, error) {
	if !v6 {
		return h.v4, nil
	}
	if h.v6Err != nil {
		return nil, fmt.Errorf("ip6tables: %w", h.v6Err)
	}
	return h.v6, nil
}

// iptMasq is the iptables backend; see the package documentation for the layout.
type iptMasq struct {
	iptHandles
}

func newIptMasq() (*iptMasq, error) {
	h, err := newIptHandles()
	if err != nil {
		return nil, err
	}
	return &iptMasq{h}, nil
}

func (*iptMasq) Backend() string { return BackendIptables }

func iptNetChain(network string) string { return iptNetChainPfx + netHash(network) }

func iptJumpSpec() []string {
	return []string{"-m", "comment", "--comment", iptJumpComment, "-j", iptTopChain}
}

func iptHostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func iptComment(e entry) string {
	return commentName(iptEntryComment+"subnet="+e.subnet.String()+" net=", e.network, iptCommentMax)
}

// iptEntrySpec is the per-container rule in NSNET-MASQ, written the way iptables -S prints it.
func iptEntrySpec(e entry) []string {
	return []string{"-s", iptHostPrefix(e.ip), "-m", "comment", "--comment", iptComment(e), "-j", iptNetChain(e.network)}
}

// parseIptComment reads back the subnet and (possibly cut) network name of an entry comment.
func parseIptComment(c string) (subnet netip.Prefix, network string, ok bool) {
	rest, found := strings.CutPrefix(c, iptEntryComment+"subnet=")
	if !found {
		return netip.Prefix{}, "", false
	}
	cidr, network, found := strings.Cut(rest, " net=")
	if !found {
		return netip.Prefix{}, "", false
	}
	subnet, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Prefix{}, "", false
	}
	return subnet, network, true
}

// iptRule is one rule of iptables -S output.
type iptRule struct {
	args     []string // after "-A CHAIN", usable as a rulespec for -D
	src, dst netip.Prefix
	comment  string
	target   string
	proto    string
	dport    int
	toDest   netip.AddrPort
}

func (r iptRule) isReturn() bool {
	return len(r.args) == 4 && r.dst.IsValid() && r.target == "RETURN"
}

func (r iptRule) isMasquerade() bool {
	return len(r.args) == 2 && r.target == "MASQUERADE"
}

// splitIptLine splits a line of iptables -S output into words; iptables quotes words with
// spaces in double quotes and escapes quotes and backslashes inside with a backslash.
func splitIptLine(line string) []string {
	var words []string
	var cur strings.Builder
	inWord, quoted, escaped := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quoted && r == '\\':
			escaped = true
		case r == '"':
			quoted = !quoted
			inWord = true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// parseIptRules extracts the rules of chain from iptables -S output.
func parseIptRules(lines []string, chain string) []iptRule {
	var rules []iptRule
	for _, line := range lines {
		words := splitIptLine(line)
		if len(words) < 2 || words[0] != "-A" || words[1] != chain {
			continue
		}
		r := iptRule{args: words[2:]}
		for i := 0; i+1 < len(r.args); i++ {
			val := r.args[i+1]
			switch r.args[i] {
			case "-s":
				r.src, _ = netip.ParsePrefix(val)
			case "-d":
				r.dst, _ = netip.ParsePrefix(val)
			case "--comment":
				r.comment = val
			case "-j":
				r.target = val
			case "-p":
				r.proto = val
			case "--dport":
				r.dport, _ = strconv.Atoi(val)
			case "--to-destination":
				r.toDest, _ = netip.ParseAddrPort(val)
			default:
				continue
			}
			i++
		}
		rules = append(rules, r)
	}
	return rules
}

func isIptExitOne(err error) bool {
	var ie *iptables.Error
	return errors.As(err, &ie) && ie.ExitStatus() == 1
}

func isIptNotExist(err error) bool {
	var ie *iptables.Error
	return errors.As(err, &ie) && ie.IsNotExist()
}

// isIptBusy reports a chain that cannot go because a rule still jumps to it or it still holds
// rules: a concurrent Add got there first, and the chain stays.
func isIptBusy(err error) bool {
	var ie *iptables.Error
	if !errors.As(err, &ie) {
		return false
	}
	msg := ie.Error()
	return strings.Contains(msg, "Device or resource busy") ||
		strings.Contains(msg, "Too many links") ||
		strings.Contains(msg, "Directory not empty")
}

// iptList returns the rules of a nat chain and whether the chain exists.
func iptList(ipt *iptables.IPTables, chain string) ([]iptRule, bool, error) {
	lines, exists, err := iptListLines(ipt, iptNatTable, chain)
	if err != nil || !exists {
		return nil, exists, err
	}
	return parseIptRules(lines, chain), true, nil
}

// iptListLines returns the iptables -S lines of a chain and whether the chain exists.
func iptListLines(ipt *iptables.IPTables, table, chain string) ([]string, bool, error) {
	lines, err := ipt.List(table, chain)
	if err != nil {
		if exists, cerr := ipt.ChainExists(table, chain); cerr == nil && !exists {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("listing %s chain %s: %w", table, chain, err)
	}
	return lines, true, nil
}

func iptEnsureChain(ipt *iptables.IPTables, chain string) error {
	return iptEnsureChainIn(ipt, iptNatTable, chain)
}

func iptEnsureChainIn(ipt *iptables.IPTables, table, chain string) error {
	err := ipt.NewChain(table, chain)
	if err == nil {
		return nil
	}
	if isIptExitOne(err) {
		if exists, cerr := ipt.ChainExists(table, chain); cerr == nil && exists {
			return nil
		}
	}
	return fmt.Errorf("creating %s chain %s: %w", table, chain, err)
}

func iptDelete(ipt *iptables.IPTables, chain string, spec []string) error {
	return iptDeleteIn(ipt, iptNatTable, chain, spec)
}

func iptDeleteIn(ipt *iptables.IPTables, table, chain string, spec []string) error {
	if err := ipt.Delete(table, chain, spec...); err != nil && !isIptNotExist(err) {
		return fmt.Errorf("deleting %q from %s chain %s: %w", strings.Join(spec, " "), table, chain, err)
	}
	return nil
}

// iptRemoveChain flushes and deletes a nat chain unless it is gone or still referenced.
func iptRemoveChain(ipt *iptables.IPTables, chain string) error {
	return iptRemoveChainIn(ipt, iptNatTable, chain)
}

func iptRemoveChainIn(ipt *iptables.IPTables, table, chain string) error {
	err := ipt.ClearAndDeleteChain(table, chain)
	if err != nil && !isIptNotExist(err) && !isIptBusy(err) {
		return fmt.Errorf("removing %s chain %s: %w", table, chain, err)
	}
	return nil
}

// iptSyncNetChain makes a per-network chain hold a RETURN for each subnet and for multicast,
// followed by MASQUERADE. RETURNs are inserted at the top, so that a chain being built never
// masquerades traffic that should have returned.
func iptSyncNetChain(ipt *iptables.IPTables, chain string, rules []iptRule, subnets []netip.Prefix, v6 bool) error {
	want := append(slices.Clone(subnets), multicastPrefix(v6))
	have := map[netip.Prefix]bool{}
	masqAt := -1
	for i, r := range rules {
		switch {
		case r.isReturn():
			if !slices.Contains(want, r.dst) {
				if err := iptDelete(ipt, chain, r.args); err != nil {
					return err
				}
				continue
			}
			have[r.dst] = true
		case r.isMasquerade():
			masqAt = i
		}
	}
	for _, p := range want {
		if have[p] {
			continue
		}
		if err := ipt.Insert(iptNatTable, chain, 1, "-d", p.String(), "-j", "RETURN"); err != nil {
			return fmt.Errorf("adding RETURN for %s to nat chain %s: %w", p, chain, err)
		}
	}
	masq := []string{"-j", "MASQUERADE"}
	if masqAt >= 0 && masqAt == len(rules)-1 {
		return nil
	}
	if masqAt >= 0 {
		if err := iptDelete(ipt, chain, masq); err != nil {
			return err
		}
	}
	if err := ipt.Append(iptNatTable, chain, masq...); err != nil {
		return fmt.Errorf("adding MASQUERADE to nat chain %s: %w", chain, err)
	}
	return nil
}

func (m *iptMasq) Add(e MasqEntry) error {
	ent, err := e.normalize()
	if err != nil {
		return err
	}
	if err := m.add(ent); err != nil {
		return fmt.Errorf("adding iptables masquerade for %s: %w", ent, err)
	}
	return nil
}

// add creates missing chains first, then the container's rule, then the per-network chain's
// contents, and the POSTROUTING jump last: a Del racing with it can remove the jump only
// before this Add re-checks it.
func (m *iptMasq) add(e entry) error {
	ipt, err := m.handle(e.v6())
	if err != nil {
		return err
	}
	top, topExists, err := iptList(ipt, iptTopChain)
	if err != nil {
		return err
	}
	if !topExists {
		if err := iptEnsureChain(ipt, iptTopChain); err != nil {
			return err
		}
	}
	chain := iptNetChain(e.network)
	netRules, netExists, err := iptList(ipt, chain)
	if err != nil {
		return err
	}
	if !netExists {
		if err := iptEnsureChain(ipt, chain); err != nil {
			return err
		}
	}

	comment := iptComment(e)
	_, ourName, _ := parseIptComment(comment)
	present := false
	subnets := []netip.Prefix{e.subnet}
	for _, r := range top {
		if r.target != chain {
			continue
		}
		subnet, name, ok := parseIptComment(r.comment)
		if ok && name != ourName {
			return fmt.Errorf("nat chain %s is already used by network %q", chain, name)
		}
		if r.src.Addr() == e.ip {
			// Keep one exact copy; an older rule for the address (other subnet) or a duplicate goes.
			if r.comment == comment && !present {
				present = true
				continue
			}
			if err := iptDelete(ipt, iptTopChain, r.args); err != nil {
				return err
			}
			continue
		}
		if ok {
			subnets = append(subnets, subnet)
		}
	}
	if !present {
		if err := ipt.Append(iptNatTable, iptTopChain, iptEntrySpec(e)...); err != nil {
			return fmt.Errorf("adding rule for %s to nat chain %s: %w", e.ip, iptTopChain, err)
		}
	}
	if err := iptSyncNetChain(ipt, chain, netRules, coverPrefixes(subnets), e.v6()); err != nil {
		return err
	}
	if err := ipt.AppendUnique(iptNatTable, iptPostrouting, iptJumpSpec()...); err != nil {
		return fmt.Errorf("adding the jump from POSTROUTING to %s: %w", iptTopChain, err)
	}
	return nil
}

func (m *iptMasq) Del(e MasqEntry) error {
	ent, err := e.normalize()
	if err != nil {
		return err
	}
	if err := m.del(ent); err != nil {
		return fmt.Errorf("removing iptables masquerade for %s: %w", ent, err)
	}
	return nil
}

func (m *iptMasq) del(e entry) error {
	ipt, err := m.handle(e.v6())
	if err != nil {
		return err
	}
	top, _, err := iptList(ipt, iptTopChain)
	if err != nil {
		return err
	}
	chain := iptNetChain(e.network)
	var subnets []netip.Prefix
	netMembers, others := 0, 0
	for _, r := range top {
		if r.target == chain && r.src.Addr() == e.ip {
			if err := iptDelete(ipt, iptTopChain, r.args); err != nil {
				return err
			}
			continue
		}
		others++
		if r.target == chain {
			netMembers++
			if subnet, _, ok := parseIptComment(r.comment); ok {
				subnets = append(subnets, subnet)
			}
		}
	}

	if netMembers == 0 {
		if err := iptRemoveChain(ipt, chain); err != nil {
			return err
		}
	} else {
		netRules, exists, err := iptList(ipt, chain)
		if err != nil {
			return err
		}
		if exists {
			if err := iptSyncNetChain(ipt, chain, netRules, coverPrefixes(subnets), e.v6()); err != nil {
				return err
			}
		}
	}

	if others > 0 {
		return nil
	}
	for range iptMaxJumpCopies {
		err := ipt.Delete(iptNatTable, iptPostrouting, iptJumpSpec()...)
		if err != nil {
			if isIptNotExist(err) {
				break
			}
			return fmt.Errorf("removing the jump from POSTROUTING to %s: %w", iptTopChain, err)
		}
	}
	return iptRemoveChain(ipt, iptTopChain)
}

func (m *iptMasq) Check(e MasqEntry) error {
	ent, err := e.normalize()
	if err != nil {
		return err
	}
	missing, err := m.check(ent)
	if err != nil {
		return fmt.Errorf("checking iptables masquerade for %s: %w", ent, err)
	}
	return missingError(BackendIptables, ent, missing)
}

func (m *iptMasq) check(e entry) ([]string, error) {
	ipt, err := m.handle(e.v6())
	if err != nil {
		return nil, err
	}
	var missing []string
	// iptables rejects a rule that names a missing chain instead of answering "no such rule".
	jump, err := ipt.Exists(iptNatTable, iptPostrouting, iptJumpSpec()...)
	if err != nil && !isIptNotExist(err) {
		return nil, fmt.Errorf("looking for the POSTROUTING jump: %w", err)
	}
	if !jump {
		missing = append(missing, "the jump from POSTROUTING to "+iptTopChain+" is missing")
	}

	chain := iptNetChain(e.network)
	top, topExists, err := iptList(ipt, iptTopChain)
	if err != nil {
		return nil, err
	}
	idx := slices.IndexFunc(top, func(r iptRule) bool { return r.target == chain && r.src.Addr() == e.ip })
	switch {
	case !topExists:
		missing = append(missing, "nat chain "+iptTopChain+" is missing")
	case idx < 0:
		missing = append(missing, fmt.Sprintf("nat chain %s has no rule -s %s -j %s", iptTopChain, iptHostPrefix(e.ip), chain))
	default:
		if subnet, _, ok := parseIptComment(top[idx].comment); !ok || subnet != e.subnet {
			missing = append(missing, fmt.Sprintf("the rule for %s records %q, want subnet %s", e.ip, top[idx].comment, e.subnet))
		}
	}

	netRules, netExists, err := iptList(ipt, chain)
	if err != nil {
		return nil, err
	}
	if !netExists {
		return append(missing, "nat chain "+chain+" is missing"), nil
	}
	returnsFor := func(p netip.Prefix) bool {
		return slices.ContainsFunc(netRules, func(r iptRule) bool {
			return r.isReturn() && r.dst.Bits() <= p.Bits() && r.dst.Contains(p.Addr())
		})
	}
	if !returnsFor(e.subnet) {
		missing = append(missing, fmt.Sprintf("nat chain %s has no RETURN for subnet %s", chain, e.subnet))
	}
	if mc := multicastPrefix(e.v6()); !returnsFor(mc) {
		missing = append(missing, fmt.Sprintf("nat chain %s has no RETURN for %s", chain, mc))
	}
	if len(netRules) == 0 || !netRules[len(netRules)-1].isMasquerade() {
		missing = append(missing, fmt.Sprintf("nat chain %s does not end with MASQUERADE", chain))
	}
	return missing, nil
}

func (m *iptMasq) Entries(network string) ([]net.IP, error) {
	if err := checkNetwork(network); err != nil {
		return nil, err
	}
	chain := iptNetChain(network)
	var addrs []netip.Addr
	for _, v6 := range []bool{false, true} {
		ipt, err := m.handle(v6)
		if err != nil {
			// Without ip6tables there can be no IPv6 entries.
			continue
		}
		top, _, err := iptList(ipt, iptTopChain)
		if err != nil {
			return nil, fmt.Errorf("listing iptables masquerade entries of network %s: %w", network, err)
		}
		for _, r := range top {
			if r.target == chain && r.src.IsValid() {
				addrs = append(addrs, r.src.Addr())
			}
		}
	}
	return sortedIPs(addrs), nil
}
