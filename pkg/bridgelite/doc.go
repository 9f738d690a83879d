// Package bridgelite implements the bridge-lite CNI plugin's verbs: a Linux
// bridge, a veth pair per attachment, in-process host-local IPAM and
// masquerade, with a per-attachment state record that lets DEL, CHECK and
// GC work without anything from the caller.
package bridgelite
