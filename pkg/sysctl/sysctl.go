// Package sysctl reads and writes kernel parameters under /proc/sys.
//
// Network parameters (net.*) belong to the network namespace of the thread
// that opens the file, so callers switch namespace (on a locked thread)
// before calling these functions.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Path returns the /proc/sys file of a dotted key such as
// "net.ipv4.ip_forward". Interface names may hold dots, so callers that build
// keys around one use PathOf instead.
func Path(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// PathOf joins path components under /proc/sys without reinterpreting dots,
// e.g. PathOf("net", "ipv6", "conf", "br.10", "accept_ra").
func PathOf(parts ...string) string {
	return filepath.Join(append([]string{"/proc/sys"}, parts...)...)
}

// Get returns the trimmed value of the file at path.
func Get(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading sysctl %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Set writes value to the file at path.
func Set(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("setting sysctl %s: %w", path, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("setting sysctl %s=%s: %w", path, value, err)
	}
	return nil
}

// Ensure writes value only when the current value differs, so that
// repeated calls on a hot path cost a read instead of a write (writes to
// some keys, like forwarding, reset other settings in the kernel).
func Ensure(path, value string) error {
	cur, err := Get(path)
	if err == nil && cur == value {
		return nil
	}
	return Set(path, value)
}
