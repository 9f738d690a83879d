// Package nat programs the netfilter NAT rules nsnet needs in the caller's current network
// namespace: today source NAT (masquerade) for container traffic leaving through the host,
// through nftables (netlink, no nft binary) or iptables.
//
// Every function acts on the network namespace of the calling OS thread at the time of the
// call: sockets are opened per call and iptables is executed per call, and a child process
// inherits the netns of the thread that forks it. Callers that switch namespaces must lock the
// OS thread first (runtime.LockOSThread). A Masquerader holds no namespace-bound state, so one
// value may serve several namespaces and goroutines.
//
// # Masquerade layout
//
// The unit of sharing is the network (the CNI network name), not the container, so that the
// rule count and the work done per ADD stay flat when a network has hundreds of containers.
// Per network and address family there is a set of container addresses and the list of the
// network's subnets. Traffic from a member address is masqueraded unless it goes to one of the
// network's subnets (any of them: containers on the same bridge talk with their real addresses
// even across ranges) or to multicast (224.0.0.0/4, ff00::/8).
//
// The network's subnets are derived, never stored separately: every member records its own
// subnet (nftables: the mask its address maps to; iptables: the rule comment). Del (and the
// iptables Add) recompute the subnet list as the minimal cover of the members' subnets, so a subnet stays as
// long as one member needs it (reference counting without a counter), and overlapping subnets
// (a network whose range changed while containers ran) collapse into the covering one.
//
// nftables (default): table "inet nsnet-masq", base chain "postrouting" (type nat, hook
// postrouting, priority srcnat). Per network and family f (4 or 6), with h = the first 8 hex
// digits of sha256(network name):
//
//	map n<f>_<h>  member address : mask of its subnet, e.g. 10.88.0.5 : 255.255.0.0
//	set s<f>_<h>  interval set, the minimal cover of the members' subnets
//	rule          meta nfproto ipv<f> ip saddr @n<f>_<h> ip daddr != @s<f>_<h> ip daddr != 224.0.0.0/4 masquerade
//	              comment "nsnet-masq n<f>_<h> net=<network>"
//
// The rule looks the source up in the map as in a set. Add and Del read the current state and
// then apply one netlink batch, which the kernel commits atomically. Add does not read the
// members, so its cost does not grow with them: adding a member is idempotent, and the kernel
// refuses (EEXIST) to map an existing member to another mask, which sends Add to a slower path
// that reads the members and replaces the entry. Del reads the members, to know which subnets
// are still needed and whether it removed the last one. A batch that fails with EEXIST, ENOENT,
// ENOTEMPTY or EBUSY lost a race with another process and is recomputed from a fresh read (a
// few attempts). Del removes the network's rule, map and set with its last member, and the
// whole table with the last network, so a namespace without containers has no nsnet objects;
// a Del that kept them looks once more, because two Dels racing for the last members each see
// the other. Rules cannot be added idempotently; Add looks for the rule by its comment first,
// and if racing Adds all added it, the extra copies (all but the lowest handle) are removed
// right away. Deleting set elements makes the kernel wait for an RCU grace period when the
// netlink socket closes (about 10 ms), whatever the set size.
//
// iptables (fallback, via go-iptables, iptables and ip6tables, nat table):
//
//	POSTROUTING   -m comment --comment "nsnet masquerade" -j NSNET-MASQ
//	NSNET-MASQ    -s <ip>/32 -m comment --comment "nsnet-masq subnet=<cidr> net=<network>" -j NSNET-M-<h>   (one per container)
//	NSNET-M-<h>   -d <cover subnet> -j RETURN ...; -d 224.0.0.0/4 -j RETURN; -j MASQUERADE
//
// Without ipset a rule per container is unavoidable; the per-network chain keeps the rest
// constant. The steps are separate iptables calls, ordered so that an interrupted or racing
// Add or Del leaves at most unused pieces (a repeated Add repairs everything); callers still
// serialise calls on one namespace. "does not exist" and "busy" answers during removal are
// tolerated.
package nat
