package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/nsnet/nsnet/test/harness"
)

// buildFloor builds test/cmd/gofloor into dir: the least a Go program does to start a command
// in nsnet's namespaces, with one Go start or two.
func buildFloor(dir string) (string, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gofloor")
	build := harness.GoCommand(root, "build", "-o", bin, "./test/cmd/gofloor")
	build.Env = append(build.Env, "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building gofloor: %w\n%s", err, out)
	}
	return bin, nil
}

// newFloorTools returns gofloor with one Go start (go-floor-1: /bin/true cloned into the
// namespaces) and with two (go-floor-2: re-executed into them, as nsnet's setup child is).
func newFloorTools(bin, rootfs string) ([]*tool, error) {
	mk := func(name string, args ...string) (*tool, error) {
		args = append(args, rootfs, "/bin/true")
		t := &tool{
			name:    name,
			version: "test/cmd/gofloor",
			floor:   true,
			command: func(ctx context.Context, _ string) *exec.Cmd { return exec.CommandContext(ctx, bin, args...) },
		}
		if _, err := t.run(context.Background(), "warmup"); err != nil {
			return nil, err
		}
		return t, nil
	}
	one, err := mk("go-floor-1")
	if err != nil {
		return nil, err
	}
	two, err := mk("go-floor-2", "-reexec")
	if err != nil {
		return nil, err
	}
	return []*tool{one, two}, nil
}
