package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

const (
	iptRawTable     = "raw"
	iptPrerouting   = "PREROUTING"
	iptOutput       = "OUTPUT"
	iptPMChain      = "NSNET-HOSTPORTS"
	iptPMMasqChain  = "NSNET-HOSTPORTS-MASQ"
	iptMartianChain = "NSNET-MARTIAN"
	iptPMComment    = "nsnet-pm "
	iptHairpinTag   = iptPMComment + "hairpin "
	iptLocalhostTag = iptPMComment + "localhost"
)

// iptPortMapper is the iptables backend; see the package documentation for the layout.
type iptPortMapper struct {
	iptHandles
}

func newIptPortMapper() (*iptPortMapper, error) {
	h, err := newIptHandles()
	if err != nil {
		return nil, err
	}
	return &iptPortMapper{h}, nil
}

func (*iptPortMapper) Backend() string { return BackendIptables }

// iptJump is a rule in a built-in chain that leads to one of ours.
type iptJump struct {
	table, chain string
	spec         []string
}

// iptPMNatJumps are the jumps of a family. Traffic to ::1 stays untouched: no route takes it
// off the host, so the client had better get a quick refusal and try 127.0.0.1.
func iptPMNatJumps(v6 bool) []iptJump {
	local := []string{"-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", "nsnet hostports", "-j", iptPMChain}
	output := local
	if v6 {
		output = append([]string{"!", "-d", loopbackPrefix(true).String()}, local...)
	}
	return []iptJump{
		{iptNatTable, iptPrerouting, local},
		{iptNatTable, iptOutput, output},
		{iptNatTable, iptPostrouting, []string{"-m", "comment", "--comment", "nsnet hostports masquerade", "-j", iptPMMasqChain}},
	}
}

func iptMartianJump() iptJump {
	return iptJump{iptRawTable, iptPrerouting, []string{"-m", "comment", "--comment", "nsnet martian", "-j", iptMartianChain}}
}

func loopbackPrefix(v6 bool) netip.Prefix {
	if v6 {
		return netip.MustParsePrefix("::1/128")
	}
	return netip.MustParsePrefix("127.0.0.0/8")
}

// iptMartianRules are the contents of NSNET-MARTIAN, written the way iptables -S prints them.
func iptMartianRules(v6 bool) [][]string {
	lo := loopbackPrefix(v6).String()
	return [][]string{
		{"-s", lo, "!", "-i", "lo", "-m", "comment", "--comment", iptPMComment + "martian saddr", "-j", "DROP"},
		{"-d", lo, "!", "-i", "lo", "-m", "comment", "--comment", iptPMComment + "martian daddr", "-j", "DROP"},
	}
}

func iptLocalhostSpec() []string {
	return []string{"-s", loopbackPrefix(false).String(), "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment", "--comment", iptLocalhostTag, "-j", "MASQUERADE"}
}

func iptHairpinSpec(ip netip.Addr, subnet netip.Prefix) []string {
	return []string{"-s", subnet.String(), "-d", iptHostPrefix(ip), "-m", "conntrack", "--ctstate", "DNAT",
		"-m", "comment", "--comment", iptHairpinTag + ip.String(), "-j", "MASQUERADE"}
}

// iptDNATComment names the target, so that a rule can be told apart from others' by eye.
func iptDNATComment(target netip.AddrPort) string { return iptPMComment + target.String() }

func iptDNATSpec(e pmEntry) []string {
	var spec []string
	if e.key.hostIP.IsValid() {
		spec = append(spec, "-d", iptHostPrefix(e.key.hostIP))
	}
	proto, port := pmProtoName(e.key.proto), strconv.Itoa(int(e.key.port))
	return append(spec, "-p", proto, "-m", proto, "--dport", port,
		"-m", "comment", "--comment", iptDNATComment(e.target), "-j", "DNAT", "--to-destination", e.target.String())
}

// entry reads one of our DNAT rules back; ok is false for anything else.
func (r iptRule) entry(v6 bool) (pmEntry, bool) {
	proto, known := pmProtocols[r.proto]
	if !strings.HasPrefix(r.comment, iptPMComment) || !known || r.dport < 1 || r.dport > 65535 || !r.toDest.IsValid() {
		return pmEntry{}, false
	}
	k := pmKey{v6: v6, proto: proto, port: uint16(r.dport)}
	if r.dst.IsValid() {
		if !r.dst.IsSingleIP() {
			return pmEntry{}, false
		}
		k.hostIP = r.dst.Addr()
	}
	return pmEntry{key: k, target: netip.AddrPortFrom(r.toDest.Addr().Unmap(), r.toDest.Port())}, true
}

// hairpin reads one of our hairpin rules back.
func (r iptRule) hairpin() (netip.Addr, netip.Prefix, bool) {
	if !strings.HasPrefix(r.comment, iptHairpinTag) || !r.dst.IsValid() || !r.src.IsValid() {
		return netip.Addr{}, netip.Prefix{}, false
	}
	return r.dst.Addr(), r.src, true
}

// iptPMState is what one family's nat chains hold.
type iptPMState struct {
	chains  bool // both nat chains exist
	some    bool // at least one of them exists
	dnat    []iptRule
	entries []pmEntry // parallel to dnat
	masq    []iptRule
}

func (st *iptPMState) lookup(k pmKey) (netip.AddrPort, bool) {
	for _, e := range st.entries {
		if e.key == k {
			return e.target, true
		}
	}
	return netip.AddrPort{}, false
}

func (st *iptPMState) subnetOf(ip netip.Addr) netip.Prefix {
	for _, r := range st.masq {
		if a, subnet, ok := r.hairpin(); ok && a == ip {
			return subnet
		}
	}
	return netip.Prefix{}
}

func readIptPM(ipt *iptables.IPTables, v6 bool) (*iptPMState, error) {
	st := &iptPMState{}
	lines, ports, err := iptListLines(ipt, iptNatTable, iptPMChain)
	if err != nil {
		return nil, err
	}
	for _, r := range parseIptRules(lines, iptPMChain) {
		if e, ok := r.entry(v6); ok {
			st.dnat = append(st.dnat, r)
			st.entries = append(st.entries, e)
		}
	}
	lines, masq, err := iptListLines(ipt, iptNatTable, iptPMMasqChain)
	if err != nil {
		return nil, err
	}
	st.masq = parseIptRules(lines, iptPMMasqChain)
	st.chains, st.some = ports && masq, ports || masq
	return st, nil
}

func splitByFamily(es []pmEntry) map[bool][]pmEntry {
	out := map[bool][]pmEntry{}
	for _, e := range es {
		out[e.key.v6] = append(out[e.key.v6], e)
	}
	return out
}

func (p *iptPortMapper) Add(ms []PortMapping) error {
	es, err := normalizeMappings(ms)
	if err != nil || len(es) == 0 {
		return err
	}
	byFam := splitByFamily(es)
	states := map[bool]*iptPMState{}
	for v6, fes := range byFam {
		ipt, err := p.handle(v6)
		if err != nil {
			return fmt.Errorf("publishing port mappings with iptables: %w", err)
		}
		st, err := readIptPM(ipt, v6)
		if err != nil {
			return fmt.Errorf("publishing port mappings with iptables: %w", err)
		}
		for _, e := range fes {
			if cur, ok := st.lookup(e.key); ok && cur != e.target {
				return &ConflictError{Mapping: e.orig, Existing: cur.String()}
			}
		}
		states[v6] = st
	}

	var undo []func() error
	err = p.add(byFam, states, &undo)
	if err == nil {
		return nil
	}
	var undoErrs []error
	for _, u := range slices.Backward(undo) {
		if uerr := u(); uerr != nil {
			undoErrs = append(undoErrs, uerr)
		}
	}
	if remaining, cerr := p.count(); cerr != nil {
		undoErrs = append(undoErrs, cerr)
	} else if cerr := p.removeIfEmpty(remaining); cerr != nil {
		undoErrs = append(undoErrs, cerr)
	}
	if len(undoErrs) > 0 {
		return fmt.Errorf("publishing port mappings with iptables: %w (undoing it: %v)", err, errors.Join(undoErrs...))
	}
	return fmt.Errorf("publishing port mappings with iptables: %w", err)
}

// add makes the changes in an order that never exposes a port unprotected: martian filter,
// masquerade rules, DNAT rules, and the jumps last. Every DNAT or hairpin rule it adds leaves
// an undo step.
func (p *iptPortMapper) add(byFam map[bool][]pmEntry, states map[bool]*iptPMState, undo *[]func() error) error {
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		if err != nil {
			// Without ip6tables there is nothing to protect over IPv6 either.
			continue
		}
		if err := iptEnsureMartian(ipt, v6); err != nil {
			return err
		}
	}
	for _, v6 := range []bool{false, true} {
		fes, ok := byFam[v6]
		if !ok {
			continue
		}
		ipt, _ := p.handle(v6)
		st := states[v6]
		if !st.chains {
			for _, ch := range []string{iptPMChain, iptPMMasqChain} {
				if err := iptEnsureChain(ipt, ch); err != nil {
					return err
				}
			}
		}
		if !v6 && !slices.ContainsFunc(st.masq, func(r iptRule) bool { return r.comment == iptLocalhostTag }) {
			if err := ipt.Insert(iptNatTable, iptPMMasqChain, 1, iptLocalhostSpec()...); err != nil {
				return fmt.Errorf("adding the localhost masquerade rule: %w", err)
			}
		}
		for ip, subnet := range pmHairpins(fes) {
			present := false
			for _, r := range st.masq {
				a, s, ok := r.hairpin()
				if !ok || a != ip {
					continue
				}
				if s == subnet && !present {
					present = true
					continue
				}
				if err := iptDelete(ipt, iptPMMasqChain, r.args); err != nil {
					return err
				}
			}
			if present {
				continue
			}
			spec := iptHairpinSpec(ip, subnet)
			if err := ipt.Append(iptNatTable, iptPMMasqChain, spec...); err != nil {
				return fmt.Errorf("adding the hairpin rule for %s: %w", ip, err)
			}
			*undo = append(*undo, func() error { return iptDelete(ipt, iptPMMasqChain, spec) })
		}
		for _, e := range fes {
			if _, ok := st.lookup(e.key); ok {
				continue
			}
			spec := iptDNATSpec(e)
			var err error
			if e.key.hostIP.IsValid() {
				// Before every rule without an address, as in nftables.
				err = ipt.Insert(iptNatTable, iptPMChain, 1, spec...)
			} else {
				err = ipt.Append(iptNatTable, iptPMChain, spec...)
			}
			if err != nil {
				return fmt.Errorf("adding the DNAT rule for %s: %w", e, err)
			}
			*undo = append(*undo, func() error { return iptDelete(ipt, iptPMChain, spec) })
		}
		for _, j := range iptPMNatJumps(v6) {
			if err := iptEnsureJump(ipt, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// iptEnsureJump puts the jump first in its built-in chain, unless it is there already.
func iptEnsureJump(ipt *iptables.IPTables, j iptJump) error {
	ok, err := ipt.Exists(j.table, j.chain, j.spec...)
	if err != nil && !isIptNotExist(err) {
		return fmt.Errorf("looking for the jump from %s %s: %w", j.table, j.chain, err)
	}
	if ok {
		return nil
	}
	if err := ipt.Insert(j.table, j.chain, 1, j.spec...); err != nil {
		return fmt.Errorf("adding %q to %s chain %s: %w", strings.Join(j.spec, " "), j.table, j.chain, err)
	}
	return nil
}

// iptRemoveJump removes every copy of a jump (racing Adds may each have inserted one).
func iptRemoveJump(ipt *iptables.IPTables, j iptJump) error {
	for range iptMaxJumpCopies {
		if err := ipt.Delete(j.table, j.chain, j.spec...); err != nil {
			if isIptNotExist(err) {
				return nil
			}
			return fmt.Errorf("removing %q from %s chain %s: %w", strings.Join(j.spec, " "), j.table, j.chain, err)
		}
	}
	return nil
}

// iptEnsureMartian fills NSNET-MARTIAN (refilling it if it differs) and jumps to it from raw PREROUTING.
func iptEnsureMartian(ipt *iptables.IPTables, v6 bool) error {
	lines, exists, err := iptListLines(ipt, iptRawTable, iptMartianChain)
	if err != nil {
		return err
	}
	want := iptMartianRules(v6)
	if !exists {
		if err := iptEnsureChainIn(ipt, iptRawTable, iptMartianChain); err != nil {
			return err
		}
	}
	var have, wantComments []string
	for _, r := range parseIptRules(lines, iptMartianChain) {
		have = append(have, r.comment)
	}
	for _, spec := range want {
		wantComments = append(wantComments, spec[slices.Index(spec, "--comment")+1])
	}
	if !slices.Equal(have, wantComments) {
		if len(have) > 0 {
			if err := ipt.ClearChain(iptRawTable, iptMartianChain); err != nil {
				return fmt.Errorf("flushing raw chain %s: %w", iptMartianChain, err)
			}
		}
		for _, spec := range want {
			if err := ipt.Append(iptRawTable, iptMartianChain, spec...); err != nil {
				return fmt.Errorf("adding to raw chain %s: %w", iptMartianChain, err)
			}
		}
	}
	return iptEnsureJump(ipt, iptMartianJump())
}

func (p *iptPortMapper) Del(ms []PortMapping) error {
	es, err := normalizeMappings(ms)
	if err != nil {
		return err
	}
	byFam := splitByFamily(es)
	remaining := map[bool]iptLeft{}
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		if err != nil {
			continue
		}
		if remaining[v6], err = delIptPM(ipt, v6, byFam[v6]); err != nil {
			return fmt.Errorf("withdrawing port mappings with iptables: %w", err)
		}
	}
	if err := p.removeIfEmpty(remaining); err != nil {
		return fmt.Errorf("withdrawing port mappings with iptables: %w", err)
	}
	return nil
}

// delIptPM removes the DNAT rules of es that still point at their targets, then the hairpin
// rules of addresses no DNAT rule points at any more.
func delIptPM(ipt *iptables.IPTables, v6 bool, es []pmEntry) (iptLeft, error) {
	st, err := readIptPM(ipt, v6)
	if err != nil {
		return iptLeft{}, err
	}
	left := iptLeft{chains: st.some}
	used := map[netip.Addr]bool{}
	for i, r := range st.dnat {
		have := st.entries[i]
		if slices.ContainsFunc(es, func(e pmEntry) bool { return e.key == have.key && e.target == have.target }) {
			if err := iptDelete(ipt, iptPMChain, r.args); err != nil {
				return iptLeft{}, err
			}
			continue
		}
		used[have.target.Addr()] = true
		left.rules++
	}
	for _, r := range st.masq {
		if ip, _, ok := r.hairpin(); ok && !used[ip] {
			if err := iptDelete(ipt, iptPMMasqChain, r.args); err != nil {
				return iptLeft{}, err
			}
		}
	}
	return left, nil
}

// iptLeft is what a family has after a change.
type iptLeft struct {
	rules  int  // DNAT rules
	chains bool // any of the nat chains
}

// count reads what each family has.
func (p *iptPortMapper) count() (map[bool]iptLeft, error) {
	out := map[bool]iptLeft{}
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		if err != nil {
			continue
		}
		st, err := readIptPM(ipt, v6)
		if err != nil {
			return nil, err
		}
		out[v6] = iptLeft{rules: len(st.dnat), chains: st.some}
	}
	return out, nil
}

// removeIfEmpty removes a family's nat jumps and chains when it has no DNAT rule left, and
// the martian filter of both families when neither has one.
func (p *iptPortMapper) removeIfEmpty(remaining map[bool]iptLeft) error {
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		// A jump cannot exist without the chain it leads to.
		if err != nil || remaining[v6].rules > 0 || !remaining[v6].chains {
			continue
		}
		for _, j := range iptPMNatJumps(v6) {
			if err := iptRemoveJump(ipt, j); err != nil {
				return err
			}
		}
		for _, ch := range []string{iptPMChain, iptPMMasqChain} {
			if err := iptRemoveChain(ipt, ch); err != nil {
				return err
			}
		}
	}
	if remaining[false].rules+remaining[true].rules > 0 {
		return nil
	}
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		if err != nil {
			continue
		}
		if err := iptRemoveJump(ipt, iptMartianJump()); err != nil {
			return err
		}
		if err := iptRemoveChainIn(ipt, iptRawTable, iptMartianChain); err != nil {
			return err
		}
	}
	return nil
}

func (p *iptPortMapper) Check(ms []PortMapping) error {
	es, err := normalizeMappings(ms)
	if err != nil || len(es) == 0 {
		return err
	}
	var missing []string
	for v6, fes := range splitByFamily(es) {
		ipt, err := p.handle(v6)
		if err != nil {
			return fmt.Errorf("checking port mappings with iptables: %w", err)
		}
		m, err := checkIptPM(ipt, v6, fes)
		if err != nil {
			return fmt.Errorf("checking port mappings with iptables: %w", err)
		}
		missing = append(missing, m...)
	}
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		if err != nil {
			continue
		}
		m, err := checkIptMartian(ipt, v6)
		if err != nil {
			return fmt.Errorf("checking port mappings with iptables: %w", err)
		}
		missing = append(missing, m...)
	}
	return pmMissingError(BackendIptables, missing)
}

func checkIptPM(ipt *iptables.IPTables, v6 bool, es []pmEntry) ([]string, error) {
	st, err := readIptPM(ipt, v6)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, e := range es {
		cur, ok := st.lookup(e.key)
		switch {
		case !ok:
			missing = append(missing, e.key.String()+" is not published")
		case cur != e.target:
			missing = append(missing, fmt.Sprintf("%s is published to %s, not %s", e.key, cur, e.target))
		}
	}
	for ip, subnet := range pmHairpins(es) {
		if st.subnetOf(ip) != subnet {
			missing = append(missing, fmt.Sprintf("nat chain %s has no hairpin rule -s %s -d %s", iptPMMasqChain, subnet, iptHostPrefix(ip)))
		}
	}
	if !v6 && !slices.ContainsFunc(st.masq, func(r iptRule) bool { return r.comment == iptLocalhostTag }) {
		missing = append(missing, "nat chain "+iptPMMasqChain+" has no localhost masquerade rule")
	}
	for _, j := range iptPMNatJumps(v6) {
		ok, err := ipt.Exists(j.table, j.chain, j.spec...)
		if err != nil && !isIptNotExist(err) {
			return nil, fmt.Errorf("looking for the jump from %s: %w", j.chain, err)
		}
		if !ok {
			missing = append(missing, fmt.Sprintf("the jump from %s %s to %s is missing", j.table, j.chain, j.spec[len(j.spec)-1]))
		}
	}
	return missing, nil
}

func checkIptMartian(ipt *iptables.IPTables, v6 bool) ([]string, error) {
	lines, _, err := iptListLines(ipt, iptRawTable, iptMartianChain)
	if err != nil {
		return nil, err
	}
	var have []string
	for _, r := range parseIptRules(lines, iptMartianChain) {
		have = append(have, r.comment)
	}
	var missing []string
	for _, spec := range iptMartianRules(v6) {
		if c := spec[slices.Index(spec, "--comment")+1]; !slices.Contains(have, c) {
			missing = append(missing, fmt.Sprintf("raw chain %s lacks %q", iptMartianChain, c))
		}
	}
	j := iptMartianJump()
	ok, err := ipt.Exists(j.table, j.chain, j.spec...)
	if err != nil && !isIptNotExist(err) {
		return nil, fmt.Errorf("looking for the jump from raw %s: %w", j.chain, err)
	}
	if !ok {
		missing = append(missing, "the jump from raw PREROUTING to "+iptMartianChain+" is missing")
	}
	return missing, nil
}

func (p *iptPortMapper) List() ([]PortMapping, error) {
	var es []pmEntry
	for _, v6 := range []bool{false, true} {
		ipt, err := p.handle(v6)
		if err != nil {
			continue
		}
		st, err := readIptPM(ipt, v6)
		if err != nil {
			return nil, fmt.Errorf("listing port mappings with iptables: %w", err)
		}
		for _, e := range st.entries {
			e.subnet = st.subnetOf(e.target.Addr())
			es = append(es, e)
		}
	}
	return sortMappings(es), nil
}
