// Package portmap implements the portmap-lite CNI plugin's verbs: it
// publishes host ports to a container (DNAT, hairpin and localhost
// included) through package nat, refuses host ports that are already taken,
// flushes stale UDP conntrack entries, and keeps a per-attachment record so
// that DEL removes exactly its own mappings without help from the caller.
package portmap
