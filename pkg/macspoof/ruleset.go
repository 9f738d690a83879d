package macspoof

import (
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/pkg/nftconn"
)

const (
	tableName   = "nsnet-macspoof"
	chainName   = "prerouting"
	portsName   = "ports"
	allowedName = "allowed"

	// ruleTag marks our rule; Check recognises the rule by it, and a new
	// tag after a change of the rule's shape makes Check report the old one.
	ruleTag = "nsnet-macspoof v1: guarded ports accept only their container's source MAC"

	// bridgePrerouting is NF_BR_PRE_ROUTING, which x/sys/unix lacks; it
	// sees every frame a port receives, before forwarding or local delivery.
	bridgePrerouting nftables.ChainHook = 0
	// priority is NF_BR_PRI_NAT_DST_BRIDGED, ahead of bridge filtering, so
	// nothing else acts on a spoofed frame before it is dropped.
	priority nftables.ChainPriority = -300
)

// The rule loads the name into the first register and the MAC right after
// it, so both lookups read from the same start: one the 16-byte name, the
// other the whole ifname . ether_addr concatenation.
const (
	regIfname = unix.NFT_REG32_00
	regMAC    = regIfname + ifnameLen/4
)

// Set IDs name sets added in a transaction; they need only differ within
// one. Setting them keeps nftables.Conn.AddSet from drawing one from its
// unsynchronised package counter, a data race between concurrent callers.
const (
	portsID   = 1
	allowedID = 2
)

// ruleset names our table and its parts.
type ruleset struct {
	table   *nftables.Table
	chain   *nftables.Chain
	ports   *nftables.Set
	allowed *nftables.Set
}

func newRuleset() *ruleset {
	t := &nftables.Table{Name: tableName, Family: nftables.TableFamilyBridge}
	hook, prio, policy := bridgePrerouting, priority, nftables.ChainPolicyAccept
	return &ruleset{
		table: t,
		chain: &nftables.Chain{
			Name:     chainName,
			Table:    t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  &hook,
			Priority: &prio,
			Policy:   &policy,
		},
		// nft shows the names only when told the key is in host byte
		// order, as it records for ifname sets it makes itself.
		ports: &nftables.Set{Table: t, Name: portsName, ID: portsID, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian},
		allowed: &nftables.Set{
			Table:   t,
			Name:    allowedName,
			ID:      allowedID,
			KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr),
		},
	}
}

// rule is `iifname @ports iifname . ether saddr != @allowed drop`.
func (rs *ruleset) rule() *nftables.Rule {
	return &nftables.Rule{
		Table: rs.table,
		Chain: rs.chain,
		Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: regIfname},
			&expr.Lookup{SourceRegister: regIfname, SetName: rs.ports.Name, SetID: rs.ports.ID},
			&expr.Payload{
				OperationType: expr.PayloadLoad,
				DestRegister:  regMAC,
				Base:          expr.PayloadBaseLLHeader,
				Offset:        macLen, // source follows the destination address
				Len:           macLen,
			},
			&expr.Lookup{SourceRegister: regIfname, SetName: rs.allowed.Name, SetID: rs.allowed.ID, Invert: true},
			&expr.Verdict{Kind: expr.VerdictDrop},
		},
		UserData: userdata.AppendString(nil, userdata.TypeComment, ruleTag),
	}
}

func isOurRule(r *nftables.Rule) bool {
	tag, ok := userdata.GetString(r.UserData, userdata.TypeComment)
	return ok && tag == ruleTag
}

// guard is one element of the allowed set.
type guard struct {
	port string
	mac  net.HardwareAddr
}

// setsState is what the table's sets hold; a set that is missing reads
// as empty with its has flag false.
type setsState struct {
	hasPorts, hasAllowed bool
	ports                []string
	allowed              []guard
}

func dial() (*nftables.Conn, error) {
	c, err := nftconn.Open()
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return c, nil
}

func tableExists(c *nftables.Conn, rs *ruleset) (bool, error) {
	_, err := c.ListTableOfFamily(rs.table.Name, rs.table.Family)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, fmt.Errorf("looking up table bridge %s: %w", rs.table.Name, err)
	}
}

// readSets lists the sets' elements; the table must exist.
func readSets(c *nftables.Conn, rs *ruleset) (*setsState, error) {
	sets, err := c.GetSets(rs.table)
	if err != nil {
		return nil, listErr(c, rs, "listing sets of table bridge "+rs.table.Name, err)
	}
	var st setsState
	for _, s := range sets {
		switch s.Name {
		case portsName:
			st.hasPorts = true
			els, err := elements(c, rs, rs.ports)
			if err != nil {
				return nil, err
			}
			for _, e := range els {
				name, err := parseIfname(e.Key)
				if err != nil {
					return nil, fmt.Errorf("set %s: %w", portsName, err)
				}
				st.ports = append(st.ports, name)
			}
		case allowedName:
			st.hasAllowed = true
			els, err := elements(c, rs, rs.allowed)
			if err != nil {
				return nil, err
			}
			for _, e := range els {
				name, mac, err := parseAllowed(e.Key)
				if err != nil {
					return nil, fmt.Errorf("set %s: %w", allowedName, err)
				}
				st.allowed = append(st.allowed, guard{port: name, mac: mac})
			}
		}
	}
	return &st, nil
}

func elements(c *nftables.Conn, rs *ruleset, s *nftables.Set) ([]nftables.SetElement, error) {
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, listErr(c, rs, "listing set bridge "+rs.table.Name+" "+s.Name, err)
	}
	return els, nil
}

// listErr makes a listing that failed because a concurrent Del removed the
// table retryable: nftables wraps the netlink error of its set and rule
// dumps with %v, which hides the ENOENT.
func listErr(c *nftables.Conn, rs *ruleset, what string, err error) error {
	if exists, lerr := tableExists(c, rs); lerr == nil && !exists {
		return fmt.Errorf("%s: table vanished: %w", what, unix.ENOENT)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// readChain returns our chain and its rules, or a nil chain when the table
// has none by that name.
func readChain(c *nftables.Conn, rs *ruleset) (*nftables.Chain, []*nftables.Rule, error) {
	chains, err := c.ListChainsOfTableFamily(rs.table.Family)
	if err != nil {
		return nil, nil, fmt.Errorf("listing bridge chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != rs.table.Name || ch.Name != rs.chain.Name {
			continue
		}
		rules, err := c.GetRules(rs.table, ch)
		if err != nil {
			return nil, nil, listErr(c, rs, "listing rules of chain bridge "+rs.table.Name+" "+ch.Name, err)
		}
		return ch, rules, nil
	}
	return nil, nil, nil
}
