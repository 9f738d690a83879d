// Command bridge-lite is a CNI plugin that connects containers to a Linux
// bridge through veth pairs, with in-process host-local IPAM and
// masquerade. It is a drop-in for the reference "bridge" plugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsnet/nsnet/pkg/bridgelite"
	"github.com/nsnet/nsnet/pkg/buildinfo"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    bridgelite.Add,
		Del:    bridgelite.Del,
		Check:  bridgelite.Check,
		GC:     bridgelite.GC,
		Status: bridgelite.Status,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), buildinfo.About("bridge-lite"))
}
