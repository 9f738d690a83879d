// Package buildinfo tells which build of nsnet a binary is, for the "about"
// line CNI plugins print when run without a command.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Version is set at link time (-X); it falls back to the module version or
// the VCS revision Go embedded.
var Version = ""

// About returns "CNI plugin NAME VERSION".
func About(name string) string {
	return fmt.Sprintf("CNI plugin %s %s", name, version())
}

func version() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "git-" + s.Value[:12]
		}
	}
	return "(devel)"
}
