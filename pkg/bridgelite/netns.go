package bridgelite

import (
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// sameNS reports whether two handles name the same namespace (same nsfs
// device and inode).
func sameNS(a, b ns.NetNS) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
