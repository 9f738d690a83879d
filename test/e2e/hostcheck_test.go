package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// rootNetCommands dump the state of the network namespace the test runs in (the machine's own):
// what a scenario must leave exactly as it found it.
var rootNetCommands = [][]string{
	{"ip", "-o", "link", "show"},
	{"ip", "-o", "addr", "show"},
	{"ip", "-4", "route", "show", "table", "all"},
	{"ip", "-6", "route", "show", "table", "all"},
	{"ip", "-4", "rule", "show"},
	{"ip", "-6", "rule", "show"},
	{"nft", "list", "ruleset"},
	{"iptables-save"},
	{"ip6tables-save"},
}

// volatile matches the parts of those dumps that change on their own: address lifetimes, route
// expiry, packet counters, iptables-save's timestamp comments.
var volatile = regexp.MustCompile(`(valid_lft|preferred_lft|expires) \S+|counter packets \d+ bytes \d+|\[\d+:\d+\]|^# .*$`)

// rootNetState reads the root network namespace; reading never changes it.
func rootNetState() (string, error) {
	var b strings.Builder
	for _, args := range rootNetCommands {
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w", strings.Join(args, " "), err)
		}
		fmt.Fprintf(&b, "== %s\n", strings.Join(args, " "))
		for _, line := range strings.Split(string(out), "\n") {
			if line = strings.TrimSpace(volatile.ReplaceAllString(line, "")); line != "" {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String(), nil
}

// sandboxMount tells whether a mount of the machine's mount table could only come from a
// sandbox or a client running in one: our tmpfs and overlays are named nsnet-e2e, and the
// directories are those the sandboxes give their clients.
func sandboxMount(m mountEntry) bool {
	if m.source == "nsnet-e2e" || strings.Contains(m.point, "nsnet-e2e") {
		return true
	}
	for _, p := range []string{"/etc/cni", "/opt/cni", "/var/lib/cni", "/var/lib/containerd", "/var/lib/containers",
		"/etc/containers", "/etc/containerd", "/run/containerd", "/run/containers", "/run/libpod", "/run/runc",
		"/run/netns/cni-", "/run/netns/netns-", "/var/run/netns/"} {
		if strings.HasPrefix(m.point, p) {
			return true
		}
	}
	return m.fstype == "overlay"
}

// mountEntry is the part of a /proc/self/mountinfo line the checks read.
type mountEntry struct{ point, fstype, source, superOpts string }

// ownMounts reads the test process's mount table.
func ownMounts() ([]mountEntry, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, line := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(line, " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if ok && len(pf) >= 5 && len(qf) >= 3 {
			out = append(out, mountEntry{point: pf[4], fstype: qf[0], source: qf[1], superOpts: qf[2]})
		}
	}
	return out, nil
}

// hostMounts lists the mounts of the test's mount namespace that sandboxMount flags.
func hostMounts() ([]string, error) {
	mounts, err := ownMounts()
	var out []string
	for _, m := range mounts {
		if sandboxMount(m) {
			out = append(out, m.point+" ("+m.fstype+" "+m.source+")")
		}
	}
	return out, err
}

// checkMachineUnchanged records the root network namespace and the host's mount table now, and
// when the test ends (after every other cleanup) fails it if either changed.
func checkMachineUnchanged(t *testing.T) {
	t.Helper()
	before, err := rootNetState()
	if err != nil {
		t.Fatalf("reading the root network namespace: %v", err)
	}
	mountsBefore, err := hostMounts()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := rootNetState()
		if err != nil {
			t.Errorf("reading the root network namespace: %v", err)
		} else if after != before {
			t.Errorf("the root network namespace changed:\n%s", lineDiff(before, after))
		}
		mountsAfter, err := hostMounts()
		if err != nil {
			t.Error(err)
		}
		for _, m := range mountsAfter {
			if !slices.Contains(mountsBefore, m) {
				t.Errorf("mount leaked into the machine's mount table: %s", m)
			}
		}
	})
}

// lineDiff lists the lines only in a ("-") and only in b ("+").
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out strings.Builder
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out.WriteString("  - " + l + "\n")
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out.WriteString("  + " + l + "\n")
		}
	}
	return out.String()
}
