// Package nat programs the netfilter NAT rules nsnet needs in the caller's current network
// namespace: source NAT (masquerade) for container traffic leaving through the host, and
// host-port publishing (DNAT) to containers, through nftables (netlink, no nft binary) or
// iptables.
//
// Every function acts on the network namespace of the calling OS thread at the time of the
// call: sockets are opened per call and iptables is executed per call, and a child process
// inherits the netns of the thread that forks it. Callers that switch namespaces must lock the
// OS thread first (runtime.LockOSThread). A Masquerader or PortMapper holds no namespace-bound
// state, so one value may serve several namespaces and goroutines.
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
//
// # Port publishing layout
//
// A published port is keyed by address family, protocol, host IP (or none: every local
// address) and host port, and leads to one container address and port. Only traffic to a
// local address is translated (never traffic the host forwards), from outside, from the host
// itself and from 127.0.0.1 (IPv4 only: the caller sets route_localnet on the bridge; there is
// no kernel path for ::1). Connections that come from the target's own subnet (hairpin, the
// container itself included) and connections from 127.0.0.0/8 are masqueraded after DNAT, so
// that replies come back through the host. While any port is published, packets that arrive
// on an interface other than lo with a loopback source or destination are dropped before
// conntrack (raw priority), which closes the hole route_localnet opens (CVE-2020-8558).
// Conntrack entries of earlier flows are not touched. With br_netfilter loaded, a container
// reaching itself is DNATed on the bridge and needs hairpin mode on its bridge port (the
// caller's job).
//
// nftables (default): table "inet nsnet-portmap", which holds nothing else and exists exactly
// while some port is published. Lookups go through maps, so the rules stay the same 14 however
// many ports are published:
//
//	map pm4    meta l4proto . th dport : ipv4_addr . inet_service              (no host IP)
//	map pm4ip  ip daddr . meta l4proto . th dport : ipv4_addr . inet_service    (with host IP)
//	map pm6, pm6ip                                                             (the same for IPv6)
//	set hp4    container address . its subnet (concatenated ranges), hp6 likewise
//	map gen    change log, see below
//	chain prerouting  (nat, prerouting, dstnat)   fib daddr type local jump hostports
//	chain output      (nat, output, -100)         fib daddr type local jump hostports
//	chain hostports   ip6 daddr ::1 return;
//	                  dnat ip to ip daddr . meta l4proto . th dport map @pm4ip, then @pm4, then pm6ip, pm6
//	chain postrouting (nat, postrouting, srcnat)  ct status dnat ip saddr 127.0.0.0/8 masquerade;
//	                  ct status dnat ip daddr . ip saddr @hp4 masquerade; the same with @hp6
//	chain martian     (filter, prerouting, raw)   iif != lo ip saddr 127.0.0.0/8 counter drop;
//	                  the same for ip daddr, ip6 saddr ::1, ip6 daddr ::1
//
// A key with a host IP takes precedence over the same protocol and port without one. Traffic
// to ::1 is left alone, so that a client gets a quick refusal and tries 127.0.0.1 (DNATed, it
// would be dropped on the way out and the client would wait for a timeout).
//
// Each Add or Del is one netlink batch, which the kernel commits atomically. Add does not read
// the maps: it adds the elements (a no-op for an existing element with the same target), and
// the kernel refuses (EEXIST) a key that maps to another target, or a hairpin range for an
// address that has another one. Add then reads the maps and reports a *ConflictError, or
// replaces the range. Add also re-creates what is missing: the table, chains, sets, and the
// rules of any chain whose rule comments differ from the expected ones. Del reads the maps,
// removes the elements whose target is still the given one, removes the hairpin range of
// every container address that no remaining element points at (the ranges are derived from
// the maps, no reference counts), and removes the table with the last mapping.
//
// A Del decides from what it read, so a racing change must make it start over. Every change
// therefore appends the next number to the map "gen": 0 from an Add, a random id from a Del.
// Racing Adds write the same element and do not conflict; an Add and a Del, or two Dels, write
// different values for one number, which the kernel refuses (EEXIST), so the later batch is
// recomputed from a fresh read (EEXIST, ENOENT, ENOTEMPTY and EBUSY all lead to a retry, up to
// 20 attempts with a short random pause). Dels trim the log; Adds trim it only every 32
// changes, because deleting elements costs an RCU grace period (about 10 ms) when the netlink
// socket closes.
//
// iptables (fallback, via go-iptables; iptables and ip6tables):
//
//	nat PREROUTING, OUTPUT  -m addrtype --dst-type LOCAL -m comment --comment "nsnet hostports" -j NSNET-HOSTPORTS
//	                        (ip6tables OUTPUT: ! -d ::1/128 as well)
//	nat NSNET-HOSTPORTS     [-d hostIP] -p tcp -m tcp --dport N -m comment --comment "nsnet-pm <ip:port>" -j DNAT --to-destination <ip:port>
//	nat POSTROUTING         -m comment --comment "nsnet hostports masquerade" -j NSNET-HOSTPORTS-MASQ
//	nat NSNET-HOSTPORTS-MASQ  -s 127.0.0.0/8 -m conntrack --ctstate DNAT -j MASQUERADE (IPv4);
//	                        per container address: -s <subnet> -d <ip> -m conntrack --ctstate DNAT -j MASQUERADE
//	raw PREROUTING          -j NSNET-MARTIAN: ! -i lo -s 127.0.0.0/8 -j DROP; ! -i lo -d 127.0.0.0/8 -j DROP (::1/128 in ip6tables)
//
// Rules with a host IP are inserted at the top of NSNET-HOSTPORTS, the others appended. The
// rules are linear in the number of mappings (one DNAT rule per mapping, one hairpin rule per
// container address), and every step is an iptables run, so this backend is markedly slower;
// it is meant for hosts without nftables. Add reads the chain first and refuses a conflicting
// key before changing anything; if a later step fails it removes what it added. The jumps are
// inserted first in their chains after the rules they lead to exist, and the martian chains
// (in both families while any mapping exists) before any DNAT rule. Chains and jumps go with
// the last mapping of their family. The steps are not atomic, so callers serialise calls on
// one namespace.
package nat
