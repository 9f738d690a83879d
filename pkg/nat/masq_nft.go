package nat

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/nftconn"
)

const (
	nftTableName = "nsnet-masq"
	nftChainName = "postrouting"
	// nft refuses to show or edit comments longer than this, although the kernel stores more.
	nftCommentMax = 128
	// A race with another process costs a re-read; more than a few in a row means the cause is
	// not a race.
	nftMaxAttempts = 5
)

// nftMasq is the nftables backend; see the package documentation for the layout.
type nftMasq struct{}

func (*nftMasq) Backend() string { return BackendNftables }

func nftAvailable() error {
	c, err := nftconn.Open()
	if err != nil {
		return fmt.Errorf("opening nftables netlink: %w", err)
	}
	defer c.CloseLasting()
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return fmt.Errorf("nftables does not answer in this network namespace: %w", err)
	}
	return nil
}

func nftTable() *nftables.Table {
	return &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}
}

func nftChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{
		Name:     nftChainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	}
}

// nftFamily holds what differs between the IPv4 and IPv6 halves of the inet table.
type nftFamily struct {
	v6       bool
	nfproto  byte
	keyType  nftables.SetDatatype
	addrLen  uint32
	saddrOff uint32 // offsets in the network header
	daddrOff uint32
}

func nftFam(v6 bool) nftFamily {
	if v6 {
		return nftFamily{v6: true, nfproto: unix.NFPROTO_IPV6, keyType: nftables.TypeIP6Addr, addrLen: 16, saddrOff: 8, daddrOff: 24}
	}
	return nftFamily{nfproto: unix.NFPROTO_IPV4, keyType: nftables.TypeIPAddr, addrLen: 4, saddrOff: 12, daddrOff: 16}
}

// nftNames are the object names of one network in one family.
type nftNames struct {
	src        string // map of member addresses to their subnet masks
	dst        string // interval set of the network's subnets
	rulePrefix string // start of the rule comment, shared by any network with this hash
	comment    string // full rule (and set) comment
}

func nftNetNames(network string, v6 bool) nftNames {
	h, f := netHash(network), famTag(v6)
	src := "n" + f + "_" + h
	prefix := "nsnet-masq " + src + " "
	return nftNames{
		src:        src,
		dst:        "s" + f + "_" + h,
		rulePrefix: prefix,
		comment:    commentName(prefix+"net=", network, nftCommentMax),
	}
}

// nftMasqRule renders
//
//	meta nfproto ipv4 ip saddr @src ip daddr != @dst ip daddr != 224.0.0.0/4 masquerade
//
// (or the IPv6 equivalent) the way nft itself encodes it, so that nft lists it readably.
func nftMasqRule(fam nftFamily, names nftNames, src, dst *nftables.Set) *nftables.Rule {
	t := nftTable()
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.saddrOff, Len: fam.addrLen},
		&expr.Lookup{SourceRegister: 1, SetName: src.Name, SetID: src.ID},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrOff, Len: fam.addrLen},
		&expr.Lookup{SourceRegister: 1, SetName: dst.Name, SetID: dst.ID, Invert: true},
	}
	exprs = append(exprs, nftDaddrNotIn(fam, multicastPrefix(fam.v6))...)
	exprs = append(exprs, &expr.Masq{})
	return &nftables.Rule{
		Table:    t,
		Chain:    nftChain(t),
		Exprs:    exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, names.comment),
	}
}

// nftDaddrNotIn matches a destination outside p: a prefix on a byte boundary loads only the
// prefix bytes, any other masks the whole address (what nft emits for the same expression).
func nftDaddrNotIn(fam nftFamily, p netip.Prefix) []expr.Any {
	addr := p.Addr().AsSlice()
	if p.Bits()%8 == 0 {
		n := uint32(p.Bits() / 8)
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrOff, Len: n},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: addr[:n]},
		}
	}
	mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrOff, Len: fam.addrLen},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: fam.addrLen, Mask: mask, Xor: make([]byte, fam.addrLen)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: addr},
	}
}

// nftRuleWellFormed tells whether a rule found by its comment still does its job.
func nftRuleWellFormed(r *nftables.Rule, names nftNames) bool {
	var src, dst, masq bool
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Lookup:
			src = src || (e.SetName == names.src && !e.Invert)
			dst = dst || (e.SetName == names.dst && e.Invert)
		case *expr.Masq:
			masq = true
		}
	}
	return src && dst && masq
}

// interval is one range of an nftables interval set; end is exclusive, and an invalid end
// means the range runs to the top of the address space.
type interval struct {
	start, end netip.Addr
}

func prefixInterval(p netip.Prefix) interval {
	return interval{start: p.Masked().Addr(), end: lastAddr(p).Next()}
}

func (iv interval) elements() []nftables.SetElement {
	els := []nftables.SetElement{{Key: iv.start.AsSlice()}}
	if iv.end.IsValid() {
		els = append(els, nftables.SetElement{Key: iv.end.AsSlice(), IntervalEnd: true})
	}
	return els
}

func (iv interval) containsPrefix(p netip.Prefix) bool {
	return iv.containsInterval(prefixInterval(p))
}

func (iv interval) containsInterval(o interval) bool {
	if iv.start.Compare(o.start) > 0 {
		return false
	}
	switch {
	case !iv.end.IsValid():
		return true
	case !o.end.IsValid():
		return false
	default:
		return o.end.Compare(iv.end) <= 0
	}
}

// parseIntervals turns the start and end elements of an interval set back into ranges.
func parseIntervals(els []nftables.SetElement) []interval {
	type bound struct {
		addr netip.Addr
		end  bool
	}
	var bounds []bound
	for _, el := range els {
		if a, ok := netip.AddrFromSlice(el.Key); ok {
			bounds = append(bounds, bound{a.Unmap(), el.IntervalEnd})
		}
	}
	// Adjacent ranges share an address: the end of one sorts before the start of the next.
	slices.SortFunc(bounds, func(a, b bound) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		if a.end == b.end {
			return 0
		}
		if a.end {
			return -1
		}
		return 1
	})
	var out []interval
	var open *netip.Addr
	for _, b := range bounds {
		switch {
		case b.end && open != nil:
			out = append(out, interval{start: *open, end: b.addr})
			open = nil
		case b.end:
			// An end without a start: nft's marker below the first range; nothing to keep.
		default:
			if open != nil {
				out = append(out, interval{start: *open})
			}
			open = &b.addr
		}
	}
	if open != nil {
		out = append(out, interval{start: *open})
	}
	return out
}

// nftNetState is what one network in one family has in the kernel.
type nftNetState struct {
	tableExists bool
	chain       *nftables.Chain
	src, dst    *nftables.Set
	members     map[netip.Addr]netip.Prefix // member address -> its subnet (invalid if unreadable); read on request
	intervals   []interval                  // contents of the subnet set
	rules       []*nftables.Rule            // this network's rules in this family
	foreignName string                      // comment of a rule that shares our hash but names another network
	// Objects in the table that belong to something else: the table stays while any exist.
	otherChains, otherSets, otherRules int
}

// transientError marks a failed read that a concurrent removal can explain; it is retried.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// readNftNet reads the state of one network in one family. Everything it reads grows with the
// number of networks or subnets, except the members, which are read only when withMembers is
// set.
func readNftNet(c *nftables.Conn, names nftNames, withMembers bool) (*nftNetState, error) {
	st := &nftNetState{members: map[netip.Addr]netip.Prefix{}}
	t := nftTable()
	if _, err := c.ListTableOfFamily(nftTableName, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return st, nil
		}
		return nil, fmt.Errorf("looking up table inet %s: %w", nftTableName, err)
	}
	st.tableExists = true

	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, transientError{fmt.Errorf("listing chains: %w", err)}
	}
	for _, ch := range chains {
		switch {
		case ch.Table == nil || ch.Table.Name != nftTableName:
		case ch.Name == nftChainName:
			st.chain = ch
		default:
			st.otherChains++
		}
	}

	sets, err := c.GetSets(t)
	if err != nil {
		return nil, transientError{fmt.Errorf("listing sets of table inet %s: %w", nftTableName, err)}
	}
	for _, s := range sets {
		switch s.Name {
		case names.src:
			st.src = s
		case names.dst:
			st.dst = s
		default:
			st.otherSets++
		}
	}

	if st.chain != nil {
		rules, err := c.GetRules(t, st.chain)
		if err != nil {
			return nil, transientError{fmt.Errorf("listing rules of chain %s: %w", nftChainName, err)}
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			switch {
			case comment == names.comment:
				st.rules = append(st.rules, r)
			case strings.HasPrefix(comment, names.rulePrefix):
				st.foreignName = comment
				st.otherRules++
			default:
				st.otherRules++
			}
		}
	}

	if st.src != nil && withMembers {
		els, err := c.GetSetElements(st.src)
		if err != nil {
			return nil, transientError{fmt.Errorf("listing map %s: %w", names.src, err)}
		}
		for _, el := range els {
			if a, ok := netip.AddrFromSlice(el.Key); ok {
				st.members[a.Unmap()] = memberSubnet(a.Unmap(), el.Val)
			}
		}
	}
	if st.dst != nil {
		els, err := c.GetSetElements(st.dst)
		if err != nil {
			return nil, transientError{fmt.Errorf("listing set %s: %w", names.dst, err)}
		}
		st.intervals = parseIntervals(els)
	}
	return st, nil
}

// memberMask is the value a member maps to: the mask of its subnet.
func memberMask(e entry) []byte {
	return net.CIDRMask(e.subnet.Bits(), e.ip.BitLen())
}

// memberSubnet turns a member and its mask back into its subnet; an invalid prefix if the
// mask is not a prefix mask of the address's length.
func memberSubnet(a netip.Addr, mask []byte) netip.Prefix {
	ones, bits := net.IPMask(mask).Size()
	if bits != a.BitLen() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, ones).Masked()
}

// memberSubnets returns the subnets of the members, leaving out skip.
func memberSubnets(members map[netip.Addr]netip.Prefix, skip netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for a, p := range members {
		// A member without a readable subnet keeps none; that only follows a manual edit.
		if a != skip && p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

// growIntervals queues the changes that make the interval set cover p as well: nothing if a
// range already covers it, else p's range replaces the ranges inside it. It needs only the
// set itself, not the members, which keeps Add independent of the number of members.
func growIntervals(c *nftables.Conn, s *nftables.Set, have []interval, p netip.Prefix) error {
	if slices.ContainsFunc(have, func(iv interval) bool { return iv.containsPrefix(p) }) {
		return nil
	}
	outer := prefixInterval(p)
	for _, iv := range have {
		if outer.containsInterval(iv) {
			if err := c.SetDeleteElements(s, iv.elements()); err != nil {
				return fmt.Errorf("removing %s-%s from set %s: %w", iv.start, iv.end, s.Name, err)
			}
		}
	}
	if err := c.SetAddElements(s, outer.elements()); err != nil {
		return fmt.Errorf("adding %s to set %s: %w", p, s.Name, err)
	}
	return nil
}

// syncIntervals queues the changes that turn the interval set from have into want.
func syncIntervals(c *nftables.Conn, s *nftables.Set, have []interval, want []netip.Prefix) error {
	wantIv := map[interval]bool{}
	for _, p := range want {
		wantIv[prefixInterval(p)] = true
	}
	for _, iv := range have {
		if wantIv[iv] {
			delete(wantIv, iv)
			continue
		}
		if err := c.SetDeleteElements(s, iv.elements()); err != nil {
			return fmt.Errorf("removing %s-%s from set %s: %w", iv.start, iv.end, s.Name, err)
		}
	}
	for _, p := range want {
		if !wantIv[prefixInterval(p)] {
			continue
		}
		if err := c.SetAddElements(s, prefixInterval(p).elements()); err != nil {
			return fmt.Errorf("adding %s to set %s: %w", p, s.Name, err)
		}
	}
	return nil
}

// nftSetIDMu serialises Conn.AddSet: google/nftables v0.3.0 numbers new sets with a global
// counter that it does not guard, so concurrent callers in one process race on it.
var nftSetIDMu sync.Mutex

func nftAddSet(c *nftables.Conn, s *nftables.Set) error {
	nftSetIDMu.Lock()
	defer nftSetIDMu.Unlock()
	return c.AddSet(s, nil)
}

func nftRetry(op func(c *nftables.Conn) error) error {
	var err error
	for range nftMaxAttempts {
		err = nftWithConn(op)
		if !isNftConflict(err) {
			return err
		}
	}
	return err
}

// nftWithConn gives op one netlink socket, opened in the calling thread's netns.
func nftWithConn(op func(c *nftables.Conn) error) error {
	c, err := nftconn.Open()
	if err != nil {
		return fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	defer c.CloseLasting()
	return op(c)
}

func isNftConflict(err error) bool {
	var te transientError
	return errors.As(err, &te) ||
		errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOENT) ||
		errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EBUSY)
}

func (*nftMasq) Add(e MasqEntry) error {
	ent, err := e.normalize()
	if err != nil {
		return err
	}
	// The first attempt does not read the members. The kernel refuses to map an existing member
	// to another mask (EEXIST), so a member that moved to another subnet, like a lost race,
	// sends Add to the full path, which reads them.
	full := false
	if err := nftRetry(func(c *nftables.Conn) error {
		err := nftAdd(c, ent, full)
		full = true
		return err
	}); err != nil {
		return fmt.Errorf("adding nftables masquerade for %s: %w", ent, err)
	}
	return nil
}

func nftAdd(c *nftables.Conn, e entry, full bool) error {
	fam, names := nftFam(e.v6()), nftNetNames(e.network, e.v6())
	st, err := readNftNet(c, names, full)
	if err != nil {
		return err
	}
	if st.foreignName != "" {
		return fmt.Errorf("map %s is already used by another network (rule comment %q)", names.src, st.foreignName)
	}

	// Only missing objects are (re)created: "add" of an existing base chain is idempotent but
	// costs milliseconds in the kernel. If one vanishes after the read, the batch fails with
	// ENOENT and is recomputed.
	t := nftTable()
	if !st.tableExists {
		c.AddTable(t)
	}
	if st.chain == nil {
		c.AddChain(nftChain(t))
	}
	src, dst := st.src, st.dst
	if src == nil {
		src = &nftables.Set{Table: t, Name: names.src, KeyType: fam.keyType, IsMap: true, DataType: fam.keyType, Comment: names.comment}
		if err := nftAddSet(c, src); err != nil {
			return fmt.Errorf("adding map %s: %w", src.Name, err)
		}
	}
	if dst == nil {
		dst = &nftables.Set{Table: t, Name: names.dst, KeyType: fam.keyType, Interval: true, Comment: names.comment}
		if err := nftAddSet(c, dst); err != nil {
			return fmt.Errorf("adding set %s: %w", dst.Name, err)
		}
	}

	member := []nftables.SetElement{{Key: e.ip.AsSlice(), Val: memberMask(e)}}
	if full {
		recorded, present := st.members[e.ip]
		if present && recorded != e.subnet {
			if err := c.SetDeleteElements(src, member); err != nil {
				return fmt.Errorf("replacing %s in map %s: %w", e.ip, src.Name, err)
			}
		}
		if err := c.SetAddElements(src, member); err != nil {
			return fmt.Errorf("adding %s to map %s: %w", e.ip, src.Name, err)
		}
		subnets := append(memberSubnets(st.members, e.ip), e.subnet)
		if err := syncIntervals(c, dst, st.intervals, coverPrefixes(subnets)); err != nil {
			return err
		}
	} else {
		if err := c.SetAddElements(src, member); err != nil {
			return fmt.Errorf("adding %s to map %s: %w", e.ip, src.Name, err)
		}
		if err := growIntervals(c, dst, st.intervals, e.subnet); err != nil {
			return err
		}
	}

	// A rule that lost its shape (edited by hand) is replaced rather than trusted.
	addRule := len(st.rules) == 0 || !nftRuleWellFormed(st.rules[0], names)
	if addRule {
		for _, r := range st.rules {
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("removing malformed rule %d: %w", r.Handle, err)
			}
		}
		c.AddRule(nftMasqRule(fam, names, src, dst))
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying nftables changes: %w", err)
	}
	if addRule {
		return nftDropDuplicateRules(c, names)
	}
	return nil
}

// nftDropDuplicateRules removes the copies that racing Adds may all have added. Every Add
// keeps the rule with the lowest handle, so they agree on which ones go; a batch that lost to
// another one deleting the same copies is recomputed, because the winner may have seen fewer.
func nftDropDuplicateRules(c *nftables.Conn, names nftNames) error {
	var err error
	for range nftMaxAttempts {
		var st *nftNetState
		st, err = readNftNet(c, names, false)
		if err != nil {
			return err
		}
		if len(st.rules) < 2 {
			return nil
		}
		slices.SortFunc(st.rules, func(a, b *nftables.Rule) int { return cmp.Compare(a.Handle, b.Handle) })
		for _, r := range st.rules[1:] {
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("removing duplicate rule %d: %w", r.Handle, err)
			}
		}
		if err = c.Flush(); err == nil || !errors.Is(err, unix.ENOENT) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("removing duplicate masquerade rules: %w", err)
	}
	return nil
}

func (*nftMasq) Del(e MasqEntry) error {
	ent, err := e.normalize()
	if err != nil {
		return err
	}
	// Two Dels racing for a network's last members each see the other's member and keep the
	// structure; a second look after a Del that kept it catches that.
	kept := false
	if err := nftRetry(func(c *nftables.Conn) error {
		var derr error
		kept, derr = nftDel(c, ent)
		return derr
	}); err != nil {
		return fmt.Errorf("removing nftables masquerade for %s: %w", ent, err)
	}
	if !kept {
		return nil
	}
	if err := nftRetry(func(c *nftables.Conn) error { return nftRemoveIfEmpty(c, ent) }); err != nil {
		return fmt.Errorf("removing nftables masquerade for %s: %w", ent, err)
	}
	return nil
}

// nftRemoveIfEmpty removes the structure of e's network and family if it has no members.
func nftRemoveIfEmpty(c *nftables.Conn, e entry) error {
	names := nftNetNames(e.network, e.v6())
	src, err := c.GetSetElements(&nftables.Set{Table: nftTable(), Name: names.src})
	if err != nil || len(src) > 0 {
		// An error here means the map, or the whole table, is gone already.
		return nil
	}
	_, err = nftDel(c, e)
	return err
}

// nftDel removes e and reports whether the network's structure stays for other members.
func nftDel(c *nftables.Conn, e entry) (bool, error) {
	names := nftNetNames(e.network, e.v6())
	st, err := readNftNet(c, names, true)
	if err != nil {
		return false, err
	}
	if !st.tableExists {
		return false, nil
	}
	t := nftTable()
	_, present := st.members[e.ip]
	remaining := len(st.members)
	if present {
		remaining--
	}
	switch {
	case remaining == 0 && st.otherChains == 0 && st.otherSets == 0 && st.otherRules == 0:
		c.DelTable(t)
	case remaining == 0:
		for _, r := range st.rules {
			if err := c.DelRule(r); err != nil {
				return false, fmt.Errorf("removing rule %d: %w", r.Handle, err)
			}
		}
		for _, s := range []*nftables.Set{st.src, st.dst} {
			if s != nil {
				c.DelSet(s)
			}
		}
	default:
		if present {
			if err := c.SetDeleteElements(st.src, []nftables.SetElement{{Key: e.ip.AsSlice()}}); err != nil {
				return false, fmt.Errorf("removing %s from map %s: %w", e.ip, names.src, err)
			}
		}
		if st.dst != nil {
			if err := syncIntervals(c, st.dst, st.intervals, coverPrefixes(memberSubnets(st.members, e.ip))); err != nil {
				return false, err
			}
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("applying nftables changes: %w", err)
	}
	return remaining > 0, nil
}

func (*nftMasq) Check(e MasqEntry) error {
	ent, err := e.normalize()
	if err != nil {
		return err
	}
	var missing []string
	if err := nftRetry(func(c *nftables.Conn) error {
		var cerr error
		missing, cerr = nftCheck(c, ent)
		return cerr
	}); err != nil {
		return fmt.Errorf("checking nftables masquerade for %s: %w", ent, err)
	}
	return missingError(BackendNftables, ent, missing)
}

func nftCheck(c *nftables.Conn, e entry) ([]string, error) {
	names := nftNetNames(e.network, e.v6())
	st, err := readNftNet(c, names, true)
	if err != nil {
		return nil, err
	}
	if !st.tableExists {
		return []string{"table inet " + nftTableName + " is missing"}, nil
	}
	var missing []string
	switch {
	case st.chain == nil:
		missing = append(missing, "chain "+nftChainName+" is missing")
	case st.chain.Type != nftables.ChainTypeNAT || st.chain.Hooknum == nil || *st.chain.Hooknum != *nftables.ChainHookPostrouting:
		missing = append(missing, "chain "+nftChainName+" is not a nat chain on the postrouting hook")
	}
	if st.src == nil {
		missing = append(missing, "map "+names.src+" is missing")
	} else if recorded, ok := st.members[e.ip]; !ok {
		missing = append(missing, fmt.Sprintf("map %s lacks %s", names.src, e.ip))
	} else if recorded != e.subnet {
		missing = append(missing, fmt.Sprintf("map %s records subnet %v for %s, want %s", names.src, recorded, e.ip, e.subnet))
	}
	if st.dst == nil {
		missing = append(missing, "set "+names.dst+" is missing")
	} else if !slices.ContainsFunc(st.intervals, func(iv interval) bool { return iv.containsPrefix(e.subnet) }) {
		missing = append(missing, fmt.Sprintf("set %s does not cover subnet %s", names.dst, e.subnet))
	}
	switch {
	case len(st.rules) == 0:
		missing = append(missing, fmt.Sprintf("rule %q is missing", names.comment))
	case !nftRuleWellFormed(st.rules[0], names):
		missing = append(missing, fmt.Sprintf("rule %q does not match @%s, !@%s and masquerade", names.comment, names.src, names.dst))
	}
	return missing, nil
}

func (*nftMasq) Entries(network string) ([]net.IP, error) {
	if err := checkNetwork(network); err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	err := nftRetry(func(c *nftables.Conn) error {
		addrs = nil
		for _, v6 := range []bool{false, true} {
			st, err := readNftNet(c, nftNetNames(network, v6), true)
			if err != nil {
				return err
			}
			for a := range st.members {
				addrs = append(addrs, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing nftables masquerade entries of network %s: %w", network, err)
	}
	return sortedIPs(addrs), nil
}

func sortedIPs(addrs []netip.Addr) []net.IP {
	slices.SortFunc(addrs, netip.Addr.Compare)
	out := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.IP(a.AsSlice()))
	}
	return out
}
