package ipam

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// parseResolvConf turns the resolvConf file into result DNS.
func parseResolvConf(path string) (types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return types.DNS{}, configError(fmt.Sprintf("reading resolvConf: %v", err))
	}
	defer f.Close()
	dns, err := readResolvConf(f)
	if err != nil {
		return types.DNS{}, configError(fmt.Sprintf("reading resolvConf %s: %v", path, err))
	}
	return dns, nil
}

// readResolvConf reads nameserver, domain, search and options like
// host-local, except that loopback nameservers (systemd-resolved's
// 127.0.0.53 and friends) are dropped: they answer only inside the host's
// network namespace.
func readResolvConf(r io.Reader) (types.DNS, error) {
	var dns types.DNS
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Unmap().IsLoopback() {
				continue
			}
			dns.Nameservers = append(dns.Nameservers, f[1])
		case "domain":
			dns.Domain = f[1]
		case "search":
			dns.Search = append(dns.Search, f[1:]...)
		case "options":
			dns.Options = append(dns.Options, f[1:]...)
		}
	}
	return dns, sc.Err()
}
