package rootfs

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// glob must find what filepath.Glob finds, whatever the pattern's shape.
func TestGlobMatchesFilepathGlob(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"cpu0/thermal_throttle/x", "cpu1/other", "cpu12/thermal_throttle/x", "cpufreq/x", "node0/x"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("cpu0", filepath.Join(root, "cpulink")); err != nil {
		t.Fatal(err)
	}
	for _, pattern := range []string{
		"cpu*/thermal_throttle",
		"cpu*/thermal_throttle/x",
		"cpu?/thermal_throttle",
		"cpu[0-9]*/thermal_throttle",
		"cpu*/missing",
		"cpu*",
		"cpu0/thermal_throttle",
		"cpu0/thermal_*",
		"missing*/x",
		"cpu[/x",
	} {
		t.Run(pattern, func(t *testing.T) {
			p := filepath.Join(root, pattern)
			want, wantErr := filepath.Glob(p)
			got, err := glob(p)
			if (err != nil) != (wantErr != nil) || !slices.Equal(got, want) {
				t.Errorf("glob(%q) = %q, %v; filepath.Glob gives %q, %v", pattern, got, err, want, wantErr)
			}
		})
	}
}
