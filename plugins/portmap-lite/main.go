// Command portmap-lite is a chained CNI plugin that publishes host ports
// to a container: DNAT from outside, from the host itself and from
// 127.0.0.1, hairpin between containers, conflict detection, and a DEL that
// needs nothing from the caller.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsnet/nsnet/pkg/buildinfo"
	"github.com/nsnet/nsnet/pkg/portmap"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    portmap.Add,
		Del:    portmap.Del,
		Check:  portmap.Check,
		GC:     portmap.GC,
		Status: portmap.Status,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), buildinfo.About("portmap-lite"))
}
