package ipam

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsnet/nsnet/pkg/netnsconf"
)

// parseResolvConf turns the resolvConf file into result DNS like
// host-local, except that loopback nameservers (systemd-resolved's
// 127.0.0.53 and friends) are dropped: they answer only inside the host's
// network namespace.
func parseResolvConf(path string) (types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return types.DNS{}, configError(fmt.Sprintf("reading resolvConf: %v", err))
	}
	defer f.Close()
	dns, err := netnsconf.ParseResolvConf(f)
	if err != nil {
		return types.DNS{}, configError(fmt.Sprintf("reading resolvConf %s: %v", path, err))
	}
	return dns, nil
}
