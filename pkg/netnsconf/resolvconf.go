package netnsconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"
)

// HostResolvConf is the host's resolver configuration, the fallback source
// of DNS servers.
const HostResolvConf = "/etc/resolv.conf"

// RenderResolvConf returns the resolv.conf for dns, marked as generated for
// o. domain comes before search because the resolver keeps only the last of
// the two, and the search list is the more complete one.
func RenderResolvConf(o Owner, dns types.DNS) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(o.marker())
	b.WriteByte('\n')
	for _, ns := range dns.Nameservers {
		if _, err := netip.ParseAddr(ns); err != nil {
			return nil, fmt.Errorf("nameserver %q is not an IP address", ns)
		}
		if err := plainToken("nameserver", ns); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if dns.Domain != "" {
		if err := plainToken("domain", dns.Domain); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "domain %s\n", dns.Domain)
	}
	for _, l := range []struct {
		key    string
		values []string
	}{{"search", dns.Search}, {"options", dns.Options}} {
		if len(l.values) == 0 {
			continue
		}
		for _, v := range l.values {
			if err := plainToken(l.key, v); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "%s %s\n", l.key, strings.Join(l.values, " "))
	}
	return b.Bytes(), nil
}

// plainToken refuses values that would split into other words or lines, or
// be read as a comment.
func plainToken(key, v string) error {
	if v == "" || v[0] == '#' || v[0] == ';' || strings.IndexFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) >= 0 {
		return fmt.Errorf("%s %q cannot be written to resolv.conf", key, v)
	}
	return nil
}

// ParseResolvConf reads nameserver, domain, search and options lines the
// way the C library does (keywords at the start of a line, '#' and ';'
// comments), keeping only nameservers that are IP addresses and that can be
// reached from another network namespace: loopback stubs such as
// systemd-resolved's 127.0.0.53, and the unspecified address, answer only in
// the namespace they run in.
func ParseResolvConf(r io.Reader) (types.DNS, error) {
	var dns types.DNS
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || sc.Text()[0] != f[0][0] || f[0][0] == '#' || f[0][0] == ';' {
			continue
		}
		switch f[0] {
		case "nameserver":
			a, err := netip.ParseAddr(f[1])
			if err != nil || a.Unmap().IsLoopback() || a.IsUnspecified() || plainToken("", f[1]) != nil {
				continue
			}
			dns.Nameservers = append(dns.Nameservers, f[1])
		case "domain":
			if plainToken("domain", f[1]) == nil {
				dns.Domain = f[1]
			}
		case "search":
			dns.Search = plainTokens(f[1:])
		case "options":
			dns.Options = append(dns.Options, plainTokens(f[1:])...)
		}
	}
	if err := sc.Err(); err != nil {
		return types.DNS{}, err
	}
	return dns, nil
}

func plainTokens(vs []string) []string {
	var out []string
	for _, v := range vs {
		if plainToken("", v) == nil {
			out = append(out, v)
		}
	}
	return out
}

// HostDNS reads the resolver configuration at path with ParseResolvConf. A
// missing file gives empty DNS.
func HostDNS(path string) (types.DNS, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return types.DNS{}, nil
	}
	if err != nil {
		return types.DNS{}, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	dns, err := ParseResolvConf(f)
	if err != nil {
		return types.DNS{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return dns, nil
}
