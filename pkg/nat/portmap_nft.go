package nat

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

const (
	pmTableName    = "nsnet-portmap"
	pmChainPre     = "prerouting"
	pmChainOut     = "output"
	pmChainPorts   = "hostports"
	pmChainPost    = "postrouting"
	pmChainMartian = "martian"
	pmGenSet       = "gen"
	pmRulePrefix   = "nsnet-pm "
	// IPS_DST_NAT in the conntrack status bits (ct status dnat).
	ctStatusDstNAT = 1 << 5
	// The kernel gives lo this index in every network namespace.
	loopbackIfindex = 1
)

// nftPortMapper is the nftables backend; see the package documentation for the layout.
type nftPortMapper struct{}

func (nftPortMapper) Backend() string { return BackendNftables }

func pmTable() *nftables.Table {
	return &nftables.Table{Name: pmTableName, Family: nftables.TableFamilyINet}
}

// pmChains are the chains of the table, in the order they are created: the regular chain
// before the base chains that jump to it.
func pmChains() []*nftables.Chain {
	t := pmTable()
	return []*nftables.Chain{
		{Name: pmChainPorts, Table: t},
		{Name: pmChainPre, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest},
		{Name: pmChainOut, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest},
		{Name: pmChainPost, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource},
		{Name: pmChainMartian, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw},
	}
}

// pmMapName names the map of published ports of a family, with or without a host IP in the key.
func pmMapName(v6, withHostIP bool) string {
	if withHostIP {
		return "pm" + famTag(v6) + "ip"
	}
	return "pm" + famTag(v6)
}

func pmHairpinName(v6 bool) string { return "hp" + famTag(v6) }

// pmSetSpecs returns fresh descriptions of the table's sets and maps (AddSet assigns IDs to them).
func pmSetSpecs() []*nftables.Set {
	t := pmTable()
	protoPort := nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	var out []*nftables.Set
	for _, v6 := range []bool{false, true} {
		fam := nftFam(v6)
		target := nftables.MustConcatSetType(fam.keyType, nftables.TypeInetService)
		out = append(out,
			&nftables.Set{Table: t, Name: pmMapName(v6, false), IsMap: true, KeyType: protoPort, DataType: target,
				Comment: "published ports of every local address"},
			&nftables.Set{Table: t, Name: pmMapName(v6, true), IsMap: true, DataType: target,
				KeyType: nftables.MustConcatSetType(fam.keyType, nftables.TypeInetProto, nftables.TypeInetService),
				Comment: "published ports of one host address"},
			&nftables.Set{Table: t, Name: pmHairpinName(v6), Interval: true, Concatenation: true,
				KeyType: nftables.MustConcatSetType(fam.keyType, fam.keyType),
				Comment: "container address . its subnet: hairpin clients to masquerade"},
		)
	}
	return append(out, pmGenSpec())
}

func pmGenSpec() *nftables.Set {
	return &nftables.Set{Table: pmTable(), Name: pmGenSet, IsMap: true, KeyType: nftables.TypeMark, DataType: nftables.TypeMark,
		KeyByteOrder: binaryutil.NativeEndian, Comment: "change log: number : 0 (Add) or a Del's random id"}
}

// nftReg32 names the idx-th 32-bit register the way nft does: the first one as NFT_REG_1,
// which starts at the same place.
func nftReg32(idx uint32) uint32 {
	if idx == 0 {
		return unix.NFT_REG_1
	}
	return unix.NFT_REG32_00 + idx
}

func nfprotoIs(fam nftFamily) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
	}
}

// ctIsDNAT matches "ct status dnat".
func ctIsDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ctStatusDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func pmRule(chain, name string, exprs ...[]expr.Any) *nftables.Rule {
	t := pmTable()
	return &nftables.Rule{
		Table:    t,
		Chain:    &nftables.Chain{Name: chain, Table: t},
		Exprs:    slices.Concat(exprs...),
		UserData: userdata.AppendString(nil, userdata.TypeComment, pmRulePrefix+name),
	}
}

// pmDNATRule renders
//
//	meta nfproto ipv4 dnat ip to [ip daddr .] meta l4proto . th dport map @pm4[ip]
//
// (or the IPv6 equivalent): the concatenated key is built in consecutive 32-bit registers,
// the lookup writes the target address and port into registers starting at 1, and nat reads
// them from there.
func pmDNATRule(v6, withHostIP bool, m *nftables.Set) *nftables.Rule {
	fam := nftFam(v6)
	exprs := nfprotoIs(fam)
	idx := uint32(0)
	if withHostIP {
		exprs = append(exprs, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrOff, Len: fam.addrLen})
		idx = fam.addrLen / 4
	}
	exprs = append(exprs,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nftReg32(idx)},
		&expr.Payload{DestRegister: nftReg32(idx + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: m.Name, SetID: m.ID, DestRegister: 1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(fam.nfproto), RegAddrMin: 1, RegProtoMin: nftReg32(fam.addrLen / 4)},
	)
	name := "dnat" + famTag(v6)
	if withHostIP {
		name += "-hostip"
	}
	return pmRule(pmChainPorts, name, exprs)
}

// pmLocalJump renders "fib daddr type local jump hostports": only traffic to a local address
// is published, never traffic the host forwards.
func pmLocalJump(chain string) *nftables.Rule {
	return pmRule(chain, "local-dnat", []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: pmChainPorts},
	})
}

// pmSkipLoopback6 renders "ip6 daddr ::1 return": no route takes ::1 off the host, so a
// client of [::1]:hostPort had better get a quick refusal and try 127.0.0.1.
func pmSkipLoopback6() *nftables.Rule {
	fam := nftFam(true)
	return pmRule(pmChainPorts, "skip-loopback6", nfprotoIs(fam), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrOff, Len: fam.addrLen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net.IPv6loopback},
		&expr.Verdict{Kind: expr.VerdictReturn},
	})
}

// pmLocalhostMasq renders "ct status dnat ip saddr 127.0.0.0/8 masquerade": a connection to
// 127.0.0.1:hostPort keeps its loopback source after DNAT, which the container cannot answer.
func pmLocalhostMasq() *nftables.Rule {
	fam := nftFam(false)
	return pmRule(pmChainPost, "localhost-masq", ctIsDNAT(), nfprotoIs(fam), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.saddrOff, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
		&expr.Masq{},
	})
}

// pmHairpinMasq renders "ct status dnat ip daddr . ip saddr @hp4 masquerade": a client in the
// container's own subnet would otherwise get the reply straight from the container, with the
// wrong source address.
func pmHairpinMasq(v6 bool, hp *nftables.Set) *nftables.Rule {
	fam := nftFam(v6)
	return pmRule(pmChainPost, "hairpin"+famTag(v6), ctIsDNAT(), nfprotoIs(fam), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.daddrOff, Len: fam.addrLen},
		&expr.Payload{DestRegister: nftReg32(fam.addrLen / 4), Base: expr.PayloadBaseNetworkHeader, Offset: fam.saddrOff, Len: fam.addrLen},
		&expr.Lookup{SourceRegister: 1, SetName: hp.Name, SetID: hp.ID},
		&expr.Masq{},
	})
}

// pmMartianRule renders "iif != lo ip saddr 127.0.0.0/8 counter drop" (daddr, and ::1 for
// IPv6): with route_localnet on, the kernel would accept such packets from a neighbour.
func pmMartianRule(v6, daddr bool) *nftables.Rule {
	fam := nftFam(v6)
	off, dir := fam.saddrOff, "saddr"
	if daddr {
		off, dir = fam.daddrOff, "daddr"
	}
	match := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
	}
	if v6 {
		match = []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 16},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net.IPv6loopback},
		}
	}
	return pmRule(pmChainMartian, "martian"+famTag(v6)+"-"+dir, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(loopbackIfindex)},
	}, nfprotoIs(fam), match, []expr.Any{
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	})
}

// pmRules returns the rules of every chain, given the table's sets by name.
func pmRules(sets map[string]*nftables.Set) map[string][]*nftables.Rule {
	return map[string][]*nftables.Rule{
		pmChainPre: {pmLocalJump(pmChainPre)},
		pmChainOut: {pmLocalJump(pmChainOut)},
		// A key with a host IP goes first: it is the more specific one.
		pmChainPorts: {
			pmSkipLoopback6(),
			pmDNATRule(false, true, sets[pmMapName(false, true)]),
			pmDNATRule(false, false, sets[pmMapName(false, false)]),
			pmDNATRule(true, true, sets[pmMapName(true, true)]),
			pmDNATRule(true, false, sets[pmMapName(true, false)]),
		},
		pmChainPost: {
			pmLocalhostMasq(),
			pmHairpinMasq(false, sets[pmHairpinName(false)]),
			pmHairpinMasq(true, sets[pmHairpinName(true)]),
		},
		pmChainMartian: {
			pmMartianRule(false, false), pmMartianRule(false, true),
			pmMartianRule(true, false), pmMartianRule(true, true),
		},
	}
}

func ruleComments(rs []*nftables.Rule) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		out = append(out, c)
	}
	return out
}

// Element encoding. In a concatenation every field takes a multiple of 4 bytes, padded with
// zeros; addresses and ports are in network byte order.

func pmProtoPort(proto uint8, port uint16) []byte {
	return []byte{proto, 0, 0, 0, byte(port >> 8), byte(port), 0, 0}
}

func pmKeyBytes(k pmKey) []byte {
	var b []byte
	if k.hostIP.IsValid() {
		b = k.hostIP.AsSlice()
	}
	return append(b, pmProtoPort(k.proto, k.port)...)
}

func pmTargetBytes(t netip.AddrPort) []byte {
	return append(t.Addr().AsSlice(), byte(t.Port()>>8), byte(t.Port()), 0, 0)
}

func pmElement(e pmEntry) nftables.SetElement {
	return nftables.SetElement{Key: pmKeyBytes(e.key), Val: pmTargetBytes(e.target)}
}

// pmHairpinElement is the range "ip . first address of subnet" to "ip . last address".
func pmHairpinElement(ip netip.Addr, subnet netip.Prefix) nftables.SetElement {
	return nftables.SetElement{
		Key:    append(ip.AsSlice(), subnet.Masked().Addr().AsSlice()...),
		KeyEnd: append(ip.AsSlice(), lastAddr(subnet).AsSlice()...),
	}
}

// decodePMElement reads an element of map name back; ok is false for anything that does not
// have the shape we write.
func decodePMElement(name string, el nftables.SetElement) (pmKey, netip.AddrPort, bool) {
	var k pmKey
	var withHostIP bool
	switch name {
	case pmMapName(false, false):
	case pmMapName(false, true):
		withHostIP = true
	case pmMapName(true, false):
		k.v6 = true
	case pmMapName(true, true):
		k.v6, withHostIP = true, true
	default:
		return k, netip.AddrPort{}, false
	}
	alen := int(nftFam(k.v6).addrLen)
	key := el.Key
	if withHostIP {
		if len(key) < alen {
			return k, netip.AddrPort{}, false
		}
		k.hostIP, _ = netip.AddrFromSlice(key[:alen])
		key = key[alen:]
	}
	if len(key) != 8 || len(el.Val) != alen+4 {
		return k, netip.AddrPort{}, false
	}
	k.proto = key[0]
	k.port = uint16(key[4])<<8 | uint16(key[5])
	addr, _ := netip.AddrFromSlice(el.Val[:alen])
	return k, netip.AddrPortFrom(addr, uint16(el.Val[alen])<<8|uint16(el.Val[alen+1])), true
}

// decodeHairpin reads a hairpin element back into its container address and subnet.
func decodeHairpin(v6 bool, el nftables.SetElement) (netip.Addr, netip.Prefix, bool) {
	alen := int(nftFam(v6).addrLen)
	if len(el.Key) != 2*alen || len(el.KeyEnd) != 2*alen {
		return netip.Addr{}, netip.Prefix{}, false
	}
	ip, _ := netip.AddrFromSlice(el.Key[:alen])
	ip2, _ := netip.AddrFromSlice(el.KeyEnd[:alen])
	first, _ := netip.AddrFromSlice(el.Key[alen:])
	last, _ := netip.AddrFromSlice(el.KeyEnd[alen:])
	if ip != ip2 {
		return netip.Addr{}, netip.Prefix{}, false
	}
	p, ok := rangePrefix(first, last)
	return ip, p, ok
}

// rangePrefix returns the prefix that spans exactly first..last, if there is one.
func rangePrefix(first, last netip.Addr) (netip.Prefix, bool) {
	for bits := range first.BitLen() + 1 {
		p := netip.PrefixFrom(first, bits)
		if p.Masked().Addr() == first && lastAddr(p) == last {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// pmHairpin is one element of a hairpin set as read from the kernel.
type pmHairpin struct {
	subnet netip.Prefix
	el     nftables.SetElement
}

// pmNftState is what the table holds.
type pmNftState struct {
	table  bool
	chains map[string]*nftables.Chain // read with pmReadChains
	rules  map[string][]*nftables.Rule
	sets   map[string]*nftables.Set
	gen    []nftables.SetElement
	// Read with pmReadElements: they grow with the mappings.
	targets map[pmKey]netip.AddrPort
	hairpin map[netip.Addr][]pmHairpin
}

// What readPMNft reads besides the sets and the change log: every netlink dump costs time.
const (
	pmReadRules = 1 << iota
	pmReadChains
	pmReadElements
)

func readPMNft(c *nftables.Conn, what int) (*pmNftState, error) {
	st := &pmNftState{
		chains:  map[string]*nftables.Chain{},
		rules:   map[string][]*nftables.Rule{},
		sets:    map[string]*nftables.Set{},
		targets: map[pmKey]netip.AddrPort{},
		hairpin: map[netip.Addr][]pmHairpin{},
	}
	t := pmTable()
	// Listing the sets fails without the table; the library loses the errno on the way, so
	// only then is the table looked up.
	sets, err := c.GetSets(t)
	if err != nil {
		_, terr := c.ListTableOfFamily(pmTableName, nftables.TableFamilyINet)
		switch {
		case errors.Is(terr, unix.ENOENT):
			return st, nil
		case terr != nil:
			return nil, fmt.Errorf("looking up table inet %s: %w", pmTableName, terr)
		default:
			return nil, transientError{fmt.Errorf("listing sets of table inet %s: %w", pmTableName, err)}
		}
	}
	st.table = true
	for _, s := range sets {
		st.sets[s.Name] = s
	}
	// From here on a failure can mean that a concurrent Del removed the table.
	if s := st.sets[pmGenSet]; s != nil {
		if st.gen, err = c.GetSetElements(s); err != nil {
			return nil, transientError{fmt.Errorf("listing map %s: %w", pmGenSet, err)}
		}
	}
	if what&pmReadChains != 0 {
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return nil, transientError{fmt.Errorf("listing chains: %w", err)}
		}
		for _, ch := range chains {
			if ch.Table != nil && ch.Table.Name == pmTableName {
				st.chains[ch.Name] = ch
			}
		}
	}
	if what&pmReadRules != 0 {
		// A missing chain reads as one without rules.
		for _, ch := range pmChains() {
			if st.rules[ch.Name], err = c.GetRules(t, ch); err != nil {
				return nil, transientError{fmt.Errorf("listing rules of chain %s: %w", ch.Name, err)}
			}
		}
	}
	if what&pmReadElements == 0 {
		return st, nil
	}
	for _, v6 := range []bool{false, true} {
		for _, withHostIP := range []bool{false, true} {
			s := st.sets[pmMapName(v6, withHostIP)]
			if s == nil {
				continue
			}
			els, err := c.GetSetElements(s)
			if err != nil {
				return nil, transientError{fmt.Errorf("listing map %s: %w", s.Name, err)}
			}
			for _, el := range els {
				if k, target, ok := decodePMElement(s.Name, el); ok {
					st.targets[k] = target
				}
			}
		}
		s := st.sets[pmHairpinName(v6)]
		if s == nil {
			continue
		}
		els, err := c.GetSetElements(s)
		if err != nil {
			return nil, transientError{fmt.Errorf("listing set %s: %w", s.Name, err)}
		}
		for _, el := range els {
			if ip, subnet, ok := decodeHairpin(v6, el); ok {
				st.hairpin[ip] = append(st.hairpin[ip], pmHairpin{subnet: subnet, el: el})
			}
		}
	}
	return st, nil
}

// pmEnsure queues whatever the table lacks and returns its sets by name. Rules are compared
// by their comments; a chain that differs is (re)created, flushed and refilled, because a
// racing Add may have created and filled it after the read.
func pmEnsure(c *nftables.Conn, st *pmNftState) (map[string]*nftables.Set, error) {
	if !st.table {
		c.AddTable(pmTable())
	}
	chains := pmChains()
	expected := pmRuleComments()
	want := map[string]bool{}
	for _, ch := range chains {
		// Adding an existing base chain is a no-op, but costs the kernel milliseconds.
		want[ch.Name] = !st.table || !slices.Equal(ruleComments(st.rules[ch.Name]), expected[ch.Name])
		if want[ch.Name] {
			c.AddChain(ch)
		}
	}
	sets := map[string]*nftables.Set{}
	for _, s := range pmSetSpecs() {
		if have := st.sets[s.Name]; have != nil {
			sets[s.Name] = have
			continue
		}
		if err := nftAddSet(c, s); err != nil {
			return nil, fmt.Errorf("adding set %s: %w", s.Name, err)
		}
		sets[s.Name] = s
	}
	rules := pmRules(sets)
	for _, ch := range chains {
		if !want[ch.Name] {
			continue
		}
		c.FlushChain(ch)
		for _, r := range rules[ch.Name] {
			c.AddRule(r)
		}
	}
	return sets, nil
}

// pmRuleComments returns the comments of every chain's rules, in order.
func pmRuleComments() map[string][]string {
	sets := map[string]*nftables.Set{}
	for _, s := range pmSetSpecs() {
		sets[s.Name] = s
	}
	out := map[string][]string{}
	for chain, rules := range pmRules(sets) {
		out[chain] = ruleComments(rules)
	}
	return out
}

// Adds trim the change log once it has this many entries: deleting elements costs an RCU
// grace period when the socket closes, which Dels pay anyway.
const pmGenTrim = 32

// pmLogChange queues the next entry of the change log (see the package documentation):
// concurrent changes that must not both commit write different values for the same number.
func pmLogChange(c *nftables.Conn, gen *nftables.Set, seen []nftables.SetElement, id uint32, trim bool) error {
	next := uint32(1)
	var keys []nftables.SetElement
	for _, el := range seen {
		if len(el.Key) == 4 {
			next = max(next, binaryutil.NativeEndian.Uint32(el.Key)+1)
		}
		keys = append(keys, nftables.SetElement{Key: el.Key})
	}
	if trim && len(keys) > 0 {
		if err := c.SetDeleteElements(gen, keys); err != nil {
			return fmt.Errorf("trimming the change log: %w", err)
		}
	}
	el := nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(next), Val: binaryutil.NativeEndian.PutUint32(id)}
	if err := c.SetAddElements(gen, []nftables.SetElement{el}); err != nil {
		return fmt.Errorf("logging the change: %w", err)
	}
	return nil
}

// Every writer conflicts with a racing Del, so a few processes changing mappings at once need
// more attempts than the masquerade backend; a short random pause spreads them out.
const pmMaxAttempts = 20

func pmRetry(op func(c *nftables.Conn) error) error {
	var err error
	for attempt := range pmMaxAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond))))
		}
		if err = nftWithConn(op); !isNftConflict(err) {
			return err
		}
	}
	return err
}

// pmDelID identifies a Del in the change log.
func pmDelID() uint32 { return rand.Uint32N(math.MaxUint32) + 1 }

// pmHairpins returns the container addresses of es with their subnets.
func pmHairpins(es []pmEntry) map[netip.Addr]netip.Prefix {
	out := map[netip.Addr]netip.Prefix{}
	for _, e := range es {
		out[e.target.Addr()] = e.subnet
	}
	return out
}

func (nftPortMapper) Add(ms []PortMapping) error {
	es, err := normalizeMappings(ms)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		return nil
	}
	// The first attempt does not read the maps. The kernel refuses (EEXIST) to map an existing
	// key to another target, or to add a hairpin range for an address that has another one;
	// the full path then reads the maps to report the conflict or replace the range.
	full := false
	err = pmRetry(func(c *nftables.Conn) error {
		err := nftPMAdd(c, es, full)
		full = true
		return err
	})
	var ce *ConflictError
	if errors.As(err, &ce) {
		return ce
	}
	if err != nil {
		return fmt.Errorf("publishing %d port mappings with nftables: %w", len(es), err)
	}
	return nil
}

func nftPMAdd(c *nftables.Conn, es []pmEntry, full bool) error {
	what := pmReadRules
	if full {
		what |= pmReadElements
	}
	st, err := readPMNft(c, what)
	if err != nil {
		return err
	}
	if full {
		for _, e := range es {
			if cur, ok := st.targets[e.key]; ok && cur != e.target {
				return &ConflictError{Mapping: e.orig, Existing: cur.String()}
			}
		}
	}
	sets, err := pmEnsure(c, st)
	if err != nil {
		return err
	}
	bySet := map[string][]nftables.SetElement{}
	for _, e := range es {
		name := pmMapName(e.key.v6, e.key.hostIP.IsValid())
		bySet[name] = append(bySet[name], pmElement(e))
	}
	for ip, subnet := range pmHairpins(es) {
		hp := sets[pmHairpinName(ip.Is6())]
		for _, h := range st.hairpin[ip] {
			if h.subnet != subnet {
				if err := c.SetDeleteElements(hp, []nftables.SetElement{h.el}); err != nil {
					return fmt.Errorf("replacing the hairpin range of %s: %w", ip, err)
				}
			}
		}
		bySet[hp.Name] = append(bySet[hp.Name], pmHairpinElement(ip, subnet))
	}
	for _, name := range slices.Sorted(maps.Keys(bySet)) {
		if err := c.SetAddElements(sets[name], bySet[name]); err != nil {
			return fmt.Errorf("adding elements to %s: %w", name, err)
		}
	}
	if err := pmLogChange(c, sets[pmGenSet], st.gen, 0, len(st.gen) >= pmGenTrim); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying nftables changes: %w", err)
	}
	return nil
}

func (nftPortMapper) Del(ms []PortMapping) error {
	es, err := normalizeMappings(ms)
	if err != nil {
		return err
	}
	if err := pmRetry(func(c *nftables.Conn) error { return nftPMDel(c, es) }); err != nil {
		return fmt.Errorf("withdrawing %d port mappings with nftables: %w", len(es), err)
	}
	return nil
}

func nftPMDel(c *nftables.Conn, es []pmEntry) error {
	st, err := readPMNft(c, pmReadElements)
	if err != nil || !st.table {
		return err
	}
	gen := st.sets[pmGenSet]
	if gen == nil {
		// Only a manual edit removes it; the batch brings it back.
		gen = pmGenSpec()
		if err := nftAddSet(c, gen); err != nil {
			return fmt.Errorf("adding map %s: %w", pmGenSet, err)
		}
	}
	id := pmDelID()
	remaining := maps.Clone(st.targets)
	var gone []pmEntry
	for _, e := range es {
		if cur, ok := remaining[e.key]; ok && cur == e.target {
			delete(remaining, e.key)
			gone = append(gone, e)
		}
	}
	if len(remaining) == 0 {
		// Logging the change makes the batch fail if anything changed after the read.
		if err := pmLogChange(c, gen, st.gen, id, false); err != nil {
			return err
		}
		c.DelTable(pmTable())
		if err := c.Flush(); err != nil {
			return fmt.Errorf("removing table inet %s: %w", pmTableName, err)
		}
		return nil
	}
	if len(gone) == 0 {
		return nil
	}
	bySet := map[string][]nftables.SetElement{}
	for _, e := range gone {
		name := pmMapName(e.key.v6, e.key.hostIP.IsValid())
		bySet[name] = append(bySet[name], nftables.SetElement{Key: pmKeyBytes(e.key)})
	}
	// Hairpin ranges are derived from the maps: a range stays while some mapping points at its
	// address. Ranges of addresses that lost their mappings some other way go too.
	used := map[netip.Addr]bool{}
	for _, target := range remaining {
		used[target.Addr()] = true
	}
	for ip, hs := range st.hairpin {
		if used[ip] {
			continue
		}
		name := pmHairpinName(ip.Is6())
		for _, h := range hs {
			bySet[name] = append(bySet[name], h.el)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(bySet)) {
		s := st.sets[name]
		if s == nil {
			return transientError{fmt.Errorf("set %s vanished", name)}
		}
		if err := c.SetDeleteElements(s, bySet[name]); err != nil {
			return fmt.Errorf("removing elements from %s: %w", name, err)
		}
	}
	if err := pmLogChange(c, gen, st.gen, id, true); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying nftables changes: %w", err)
	}
	return nil
}

func (nftPortMapper) Check(ms []PortMapping) error {
	es, err := normalizeMappings(ms)
	if err != nil || len(es) == 0 {
		return err
	}
	var missing []string
	if err := pmRetry(func(c *nftables.Conn) error {
		st, err := readPMNft(c, pmReadRules|pmReadChains|pmReadElements)
		if err != nil {
			return err
		}
		missing = nftPMCheck(st, es)
		return nil
	}); err != nil {
		return fmt.Errorf("checking port mappings with nftables: %w", err)
	}
	return pmMissingError(BackendNftables, missing)
}

func nftPMCheck(st *pmNftState, es []pmEntry) []string {
	var missing []string
	if !st.table {
		missing = append(missing, "table inet "+pmTableName+" is missing")
	}
	for _, e := range es {
		cur, ok := st.targets[e.key]
		switch {
		case !ok:
			missing = append(missing, e.key.String()+" is not published")
		case cur != e.target:
			missing = append(missing, fmt.Sprintf("%s is published to %s, not %s", e.key, cur, e.target))
		}
	}
	if !st.table {
		return missing
	}
	for _, s := range pmSetSpecs() {
		if st.sets[s.Name] == nil {
			missing = append(missing, "set "+s.Name+" is missing")
		}
	}
	want := pmRuleComments()
	for _, spec := range pmChains() {
		ch := st.chains[spec.Name]
		switch {
		case ch == nil:
			missing = append(missing, "chain "+spec.Name+" is missing")
			continue
		case !sameHook(ch, spec):
			missing = append(missing, "chain "+spec.Name+" has the wrong type, hook or priority")
		}
		if have, w := ruleComments(st.rules[spec.Name]), want[spec.Name]; !slices.Equal(have, w) {
			missing = append(missing, fmt.Sprintf("chain %s holds rules %q, want %q", spec.Name, have, w))
		}
	}
	for ip, subnet := range pmHairpins(es) {
		if !slices.ContainsFunc(st.hairpin[ip], func(h pmHairpin) bool { return h.subnet == subnet }) {
			missing = append(missing, fmt.Sprintf("hairpin set %s lacks %s . %s", pmHairpinName(ip.Is6()), ip, subnet))
		}
	}
	return missing
}

func sameHook(have, want *nftables.Chain) bool {
	if want.Hooknum == nil {
		return have.Hooknum == nil
	}
	return have.Hooknum != nil && *have.Hooknum == *want.Hooknum &&
		have.Type == want.Type &&
		have.Priority != nil && *have.Priority == *want.Priority
}

func (nftPortMapper) List() ([]PortMapping, error) {
	var es []pmEntry
	if err := pmRetry(func(c *nftables.Conn) error {
		st, err := readPMNft(c, pmReadElements)
		if err != nil {
			return err
		}
		es = nil
		for k, target := range st.targets {
			e := pmEntry{key: k, target: target}
			if hs := st.hairpin[target.Addr()]; len(hs) > 0 {
				e.subnet = hs[0].subnet
			}
			es = append(es, e)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing port mappings with nftables: %w", err)
	}
	return sortMappings(es), nil
}
