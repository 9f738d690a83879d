package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nsnet/nsnet/test/vm"
)

func TestRunPackage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		timeout time.Duration
		code    int
		out     string
	}{
		{"pass", "echo ok; echo err >&2", time.Minute, 0, "ok\nerr\n"},
		{"exit code and partial line", "printf partial; exit 3", time.Minute, 3, "partial\n"},
		{"killed with its group at the timeout", "sleep 30 & sleep 30", 300 * time.Millisecond, -1, "vmtest runner: p killed after 300ms\n"},
		{"working directory", "pwd", time.Minute, 0, "DIR\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "work")
			outFile, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			defer outFile.Close()
			p := vm.PlanPackage{Name: "p", Binary: "/bin/sh", Args: []string{"-c", tc.script}, Dir: dir, Timeout: tc.timeout}
			start := time.Now()
			code := runPackage(p, []string{"PATH=/usr/bin:/bin"}, outFile)
			if code != tc.code {
				t.Errorf("code %d, want %d", code, tc.code)
			}
			if time.Since(start) > 20*time.Second {
				t.Errorf("took %s: leftover processes held the run up", time.Since(start))
			}
			got, err := os.ReadFile(outFile.Name())
			if err != nil {
				t.Fatal(err)
			}
			want := tc.out
			if want == "DIR\n" {
				want = dir + "\n"
			}
			if string(got) != want {
				t.Errorf("output %q, want %q", got, want)
			}
		})
	}
}
