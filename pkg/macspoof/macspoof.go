// Package macspoof implements the bridge plugin's macspoofchk: frames a
// container sends into the bridge through its host-side veth are dropped
// unless their source MAC is the container's.
//
// All guards of a network namespace share one nftables table, bridge
// nsnet-macspoof, holding a single rule
//
//	iifname @ports iifname . ether saddr != @allowed drop
//
// so a guard is two set elements and the rule count stays the same however
// many containers there are. The functions work in the caller's current
// network namespace over netlink; no nft binary is needed.
//
// Callers are expected to serialise calls (the plugin holds a file lock), but
// concurrent calls converge too: each Add commits a complete table in one
// transaction, and each Del looks again after its commit so that the last of
// several concurrent Dels removes the emptied table. The race left is a Del
// of the last guard overlapping an Add: when the Add commits between Del's
// listing and Del's commit, the table goes with the new guard in it.
package macspoof

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// attempts bounds retries of a transaction that failed with ENOENT: it was
// built from a listing that a concurrent caller made stale.
const attempts = 3

// Add guards hostVeth: only frames from mac may enter the bridge through it. Idempotent; creates the table on first use.
func Add(hostVeth string, mac net.HardwareAddr) error {
	if err := validName(hostVeth); err != nil {
		return err
	}
	if err := validMAC(mac); err != nil {
		return err
	}
	err := retry(func(c *nftables.Conn) error { return add(c, hostVeth, mac) })
	if err != nil {
		return fmt.Errorf("guarding %s with MAC %s: %w", hostVeth, mac, err)
	}
	return nil
}

// add re-adds the table, chain and sets (a no-op when they exist) and
// replaces the rule in the same transaction rather than adding it only when
// a listing shows it missing: a concurrent Add or Del cannot slip in between,
// so the chain always ends up with exactly one rule.
func add(c *nftables.Conn, hostVeth string, mac net.HardwareAddr) error {
	rs := newRuleset()
	var stale []nftables.SetElement
	exists, err := tableExists(c, rs)
	if err != nil {
		return err
	}
	if exists {
		st, err := readSets(c, rs)
		if err != nil {
			return err
		}
		for _, g := range st.allowed {
			if g.port == hostVeth && !bytes.Equal(g.mac, mac) {
				stale = append(stale, nftables.SetElement{Key: allowedKey(g.port, g.mac)})
			}
		}
	}

	c.AddTable(rs.table)
	c.AddChain(rs.chain)
	if err := c.AddSet(rs.ports, nil); err != nil {
		return fmt.Errorf("adding set %s: %w", portsName, err)
	}
	if err := c.AddSet(rs.allowed, nil); err != nil {
		return fmt.Errorf("adding set %s: %w", allowedName, err)
	}
	c.FlushChain(rs.chain)
	c.AddRule(rs.rule())
	if len(stale) > 0 {
		if err := c.SetDeleteElements(rs.allowed, stale); err != nil {
			return fmt.Errorf("removing old MACs of %s: %w", hostVeth, err)
		}
	}
	if err := c.SetAddElements(rs.ports, []nftables.SetElement{{Key: ifnameKey(hostVeth)}}); err != nil {
		return fmt.Errorf("adding %s to set %s: %w", hostVeth, portsName, err)
	}
	if err := c.SetAddElements(rs.allowed, []nftables.SetElement{{Key: allowedKey(hostVeth, mac)}}); err != nil {
		return fmt.Errorf("adding %s . %s to set %s: %w", hostVeth, mac, allowedName, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("committing table bridge %s: %w", tableName, err)
	}
	return nil
}

// Del removes hostVeth's guard; missing pieces are not errors; when no guard is left, delete the whole table so an idle host has zero rules.
func Del(hostVeth string) error {
	if validName(hostVeth) != nil {
		// No set element can hold such a name, so there is nothing to remove.
		return nil
	}
	if err := retry(func(c *nftables.Conn) error { return del(c, hostVeth) }); err != nil {
		return fmt.Errorf("removing MAC guard of %s: %w", hostVeth, err)
	}
	return nil
}

// del runs two passes: the second sees whether Dels of the other guards
// that committed alongside this one left the table without guards, so that
// the last of them deletes it.
func del(c *nftables.Conn, hostVeth string) error {
	for range 2 {
		done, err := delPass(c, hostVeth)
		if err != nil || done {
			return err
		}
	}
	return nil
}

// delPass deletes the table if hostVeth is its only guard, else hostVeth's
// elements; done reports that nothing is left to do.
func delPass(c *nftables.Conn, hostVeth string) (done bool, err error) {
	rs := newRuleset()
	exists, err := tableExists(c, rs)
	if err != nil || !exists {
		return true, err
	}
	st, err := readSets(c, rs)
	if err != nil {
		return false, err
	}

	if !slices.ContainsFunc(st.ports, func(p string) bool { return p != hostVeth }) {
		c.DelTable(rs.table)
		if err := c.Flush(); err != nil {
			return false, fmt.Errorf("deleting table bridge %s: %w", tableName, err)
		}
		return true, nil
	}

	var ports, macs []nftables.SetElement
	if slices.Contains(st.ports, hostVeth) {
		ports = append(ports, nftables.SetElement{Key: ifnameKey(hostVeth)})
	}
	for _, g := range st.allowed {
		if g.port == hostVeth {
			macs = append(macs, nftables.SetElement{Key: allowedKey(g.port, g.mac)})
		}
	}
	if len(ports) == 0 && len(macs) == 0 {
		return true, nil
	}
	if len(ports) > 0 {
		if err := c.SetDeleteElements(rs.ports, ports); err != nil {
			return false, fmt.Errorf("removing %s from set %s: %w", hostVeth, portsName, err)
		}
	}
	if len(macs) > 0 {
		if err := c.SetDeleteElements(rs.allowed, macs); err != nil {
			return false, fmt.Errorf("removing MACs of %s from set %s: %w", hostVeth, allowedName, err)
		}
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("committing table bridge %s: %w", tableName, err)
	}
	return false, nil
}

// Check returns nil if hostVeth is guarded with mac, else an error saying what is missing.
func Check(hostVeth string, mac net.HardwareAddr) error {
	if err := validName(hostVeth); err != nil {
		return err
	}
	if err := validMAC(mac); err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.CloseLasting()

	problems, err := check(c, hostVeth, mac)
	if err != nil {
		return fmt.Errorf("checking MAC guard of %s: %w", hostVeth, err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s is not guarded with MAC %s: %w", hostVeth, mac, errors.Join(problems...))
	}
	return nil
}

// check returns what is wrong with the guard as problems, and failures to
// find out as err.
func check(c *nftables.Conn, hostVeth string, mac net.HardwareAddr) (problems []error, err error) {
	rs := newRuleset()
	exists, err := tableExists(c, rs)
	if err != nil {
		return nil, err
	}
	if !exists {
		return []error{fmt.Errorf("table bridge %s is missing", tableName)}, nil
	}

	ch, rules, err := readChain(c, rs)
	if err != nil {
		return nil, err
	}
	problems = append(problems, chainProblems(ch, rules)...)

	st, err := readSets(c, rs)
	if err != nil {
		return nil, err
	}
	problems = append(problems, setProblems(st, hostVeth, mac)...)
	return problems, nil
}

func chainProblems(ch *nftables.Chain, rules []*nftables.Rule) []error {
	if ch == nil {
		return []error{fmt.Errorf("chain %s is missing", chainName)}
	}
	var problems []error
	if ch.Type != nftables.ChainTypeFilter || ch.Hooknum == nil || *ch.Hooknum != bridgePrerouting ||
		ch.Priority == nil || *ch.Priority != priority {
		problems = append(problems, fmt.Errorf("chain %s is not a filter chain on hook prerouting at priority %d", chainName, priority))
	}
	if ch.Policy != nil && *ch.Policy != nftables.ChainPolicyAccept {
		problems = append(problems, fmt.Errorf("chain %s has policy drop", chainName))
	}
	ours := 0
	for _, r := range rules {
		if isOurRule(r) {
			ours++
		}
	}
	if ours != 1 || len(rules) != 1 {
		problems = append(problems, fmt.Errorf("chain %s has %d rules, %d of them ours; want just our drop rule", chainName, len(rules), ours))
	}
	return problems
}

func setProblems(st *setsState, hostVeth string, mac net.HardwareAddr) []error {
	var problems []error
	switch {
	case !st.hasPorts:
		problems = append(problems, fmt.Errorf("set %s is missing", portsName))
	case !slices.Contains(st.ports, hostVeth):
		problems = append(problems, fmt.Errorf("set %s lacks %s", portsName, hostVeth))
	}
	if !st.hasAllowed {
		return append(problems, fmt.Errorf("set %s is missing", allowedName))
	}
	found := false
	for _, g := range st.allowed {
		switch {
		case g.port != hostVeth:
		case bytes.Equal(g.mac, mac):
			found = true
		default:
			problems = append(problems, fmt.Errorf("set %s also allows %s from %s", allowedName, g.mac, hostVeth))
		}
	}
	if !found {
		problems = append(problems, fmt.Errorf("set %s lacks %s . %s", allowedName, hostVeth, mac))
	}
	return problems
}

// retry runs fn on one connection until it succeeds, fails with anything
// but ENOENT, or runs out of attempts.
func retry(fn func(c *nftables.Conn) error) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	for range attempts - 1 {
		if err = fn(c); !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return fn(c)
}
