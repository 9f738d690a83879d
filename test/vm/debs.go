package vm

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// EnsureDebs installs, with apt-get, those of the Debian packages that dpkg
// does not list as installed; apt-get's output goes to log.
func EnsureDebs(log io.Writer, names ...string) error {
	var missing []string
	for _, name := range names {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", name).Output()
		if err != nil || strings.TrimSpace(string(out)) != "install ok installed" {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(log, "vmtest: installing Debian packages: %s\n", strings.Join(missing, " "))
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"update", "-q"},
		append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...),
	} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

// AptMirror returns the URI apt fetches suite's main packages from on this
// host (as apt-get indextargets reports it), so debootstrap uses the same,
// reachable, mirror.
func AptMirror(suite string) (string, error) {
	out, err := exec.Command("apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE) $(COMPONENT) $(IDENTIFIER)").Output()
	if err != nil {
		return "", fmt.Errorf("apt-get indextargets: %w (run apt-get update first)", err)
	}
	return mirrorFromIndexTargets(string(out), suite)
}

func mirrorFromIndexTargets(out, suite string) (string, error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[1] == suite && f[2] == "main" && f[3] == "Packages" {
			return f[0], nil
		}
	}
	return "", fmt.Errorf("apt has no source for %s main (apt-get indextargets lists none)", suite)
}
