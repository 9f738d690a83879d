package container

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsnet/nsnet/pkg/cninet"
)

// hostResolvConf is read for the container's resolv.conf.
const hostResolvConf = "/etc/resolv.conf"

// ParseHostEntry parses --add-host NAME:IP (the IP may be IPv6 and so
// hold colons, bracketed or not).
func ParseHostEntry(s string) (HostEntry, error) {
	name, ip, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return HostEntry{}, fmt.Errorf("--add-host %q: want NAME:IP", s)
	}
	if !hostsName(name) {
		return HostEntry{}, fmt.Errorf("--add-host %q: %q cannot be a name in /etc/hosts", s, name)
	}
	addr, err := cninet.ParseHostIP(ip)
	if err != nil {
		return HostEntry{}, fmt.Errorf("--add-host %q: %w", s, err)
	}
	return HostEntry{Name: name, IP: addr.String()}, nil
}

// hostsName reports whether name stays one name on an /etc/hosts line,
// which a resolver splits at white space and cuts at '#'.
func hostsName(name string) bool {
	if !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r == ' ' || r == '#' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// hostsFile is the container's /etc/hosts.
func hostsFile(hostname string, extra []HostEntry) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
	}
	for _, h := range extra {
		fmt.Fprintf(&b, "%s\t%s\n", h.IP, h.Name)
	}
	return b.Bytes()
}

// resolvConf is the host's resolv.conf without loopback nameservers,
// which would point at the container's own loopback; with none left it is
// empty, so the resolver uses its defaults rather than a dead address.
func resolvConf(host []byte) []byte {
	var out bytes.Buffer
	servers := 0
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			addr, err := netip.ParseAddr(strings.SplitN(f[1], "%", 2)[0])
			if err == nil && addr.IsLoopback() {
				continue
			}
			servers++
		}
		out.WriteString(line + "\n")
	}
	if servers == 0 {
		return nil
	}
	return out.Bytes()
}

// writeEtcFiles writes /etc/hostname, /etc/hosts and /etc/resolv.conf of a
// container into dir and returns them as isolation's EtcFiles.
func writeEtcFiles(dir string, cfg Config) (map[string]string, error) {
	host, err := os.ReadFile(hostResolvConf)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("reading %s: %w", hostResolvConf, err)
	}
	resolv := resolvConf(host)
	if len(cfg.DNS)+len(cfg.DNSSearch) > 0 {
		if resolv, err = resolvConfFor(cfg, types.DNS{}); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		"hostname":    []byte(cfg.Hostname + "\n"),
		"hosts":       hostsFile(cfg.Hostname, cfg.AddHosts),
		"resolv.conf": resolv,
	}
	out := map[string]string{}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := writeNew(p, data, 0o644); err != nil {
			return nil, err
		}
		out["/etc/"+name] = p
	}
	return out, nil
}

// writeNew creates path with data and exactly mode (whatever the umask).
// The /etc files need no atomic replacement: they are written once, into
// the container's new state directory, before anything reads them.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
