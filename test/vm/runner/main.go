// Command runner runs inside nsnet's test VM (package test/vm): it executes
// every test binary of the plan the host packed into the image, writes
// their output between framing lines to the results port, and exits; the
// VM's init (or systemd unit) then powers the VM off.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsnet/nsnet/test/vm"
)

func main() {
	planPath := flag.String("plan", vm.GuestPlan, "the plan the host wrote")
	flag.Parse()
	if err := run(*planPath); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest runner:", err)
		os.Exit(1)
	}
}

func run(planPath string) error {
	data, err := os.ReadFile(planPath)
	if err != nil {
		return fmt.Errorf("reading plan: %w", err)
	}
	var plan vm.Plan
	if err := json.Unmarshal(data, &plan); err != nil {
		return fmt.Errorf("decoding plan %s: %w", planPath, err)
	}
	out, err := os.OpenFile(plan.Output, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("opening results port: %w", err)
	}
	defer out.Close()
	rawTTY(out)
	env := plan.Env
	if plan.ScratchSerial != "" {
		disk, majmin, err := diskBySerial(plan.ScratchSerial)
		if err != nil {
			fmt.Fprint(out, vm.InfoLine("no scratch disk: "+err.Error()))
		} else {
			env = append(env, "NSNET_VM_DISK="+disk, "NSNET_VM_DISK_MAJMIN="+majmin)
		}
	}
	for _, line := range describeGuest() {
		fmt.Fprint(out, vm.InfoLine(line))
	}
	for _, p := range plan.Packages {
		fmt.Fprint(out, vm.StartLine(p.Name))
		start := time.Now()
		code := runPackage(p, env, out)
		fmt.Fprint(out, vm.EndLine(p.Name, code, time.Since(start)))
	}
	fmt.Fprint(out, vm.DoneLine())
	return nil
}

// rawTTY turns off output processing on a serial port, so lines reach the
// host as written; a non-tty output is left alone.
func rawTTY(f *os.File) {
	t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		return
	}
	t.Oflag &^= unix.OPOST
	t.Cflag = t.Cflag&^unix.CBAUD | unix.B115200
	_ = unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
}

// runPackage runs one test binary in its own process group and returns its
// exit code, -1 when the plan's timeout killed it. Whatever the binary left
// running in its group is killed afterwards.
func runPackage(p vm.PlanPackage, env []string, out *os.File) int {
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		fmt.Fprintf(out, "vmtest runner: %s: %v\n", p.Name, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.Timeout)
	defer cancel()
	lw := &lineWriter{w: out}
	cmd := exec.CommandContext(ctx, p.Binary, p.Args...)
	cmd.Dir = p.Dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	lw.finish()
	if errors.Is(err, exec.ErrWaitDelay) {
		fmt.Fprintf(out, "vmtest runner: %s exited but left processes holding its output open\n", p.Name)
		return cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(out, "vmtest runner: %s killed after %s\n", p.Name, p.Timeout)
		return -1
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		fmt.Fprintf(out, "vmtest runner: %s: %v\n", p.Name, err)
		return 2
	}
	return 0
}

// lineWriter passes output through and remembers whether it ended in the
// middle of a line, so the framing line after it starts a line of its own.
type lineWriter struct {
	w       io.Writer
	partial bool
}

func (l *lineWriter) Write(b []byte) (int, error) {
	if len(b) > 0 {
		l.partial = b[len(b)-1] != '\n'
	}
	return l.w.Write(b)
}

func (l *lineWriter) finish() {
	if l.partial {
		_, _ = io.WriteString(l.w, "\n")
		l.partial = false
	}
}

// diskBySerial finds the virtio disk whose serial the host set and returns
// its device node and major:minor.
func diskBySerial(serial string) (string, string, error) {
	blocks, _ := filepath.Glob("/sys/block/vd*")
	for _, b := range blocks {
		s, err := os.ReadFile(filepath.Join(b, "serial"))
		if err != nil || strings.TrimSpace(string(s)) != serial {
			continue
		}
		dev, err := os.ReadFile(filepath.Join(b, "dev"))
		if err != nil {
			return "", "", fmt.Errorf("reading %s/dev: %w", b, err)
		}
		return "/dev/" + filepath.Base(b), strings.TrimSpace(string(dev)), nil
	}
	return "", "", fmt.Errorf("no virtio disk with serial %q among %v", serial, blocks)
}

// describeGuest reports what the tests run on: kernel, init, cgroup
// hierarchy and controllers, and the time since boot.
func describeGuest() []string {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return strings.Join(strings.Fields(string(b)), " ")
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	var fs unix.Statfs_t
	cgfs := "not cgroup2"
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		cgfs = "cgroup2"
	}
	uptime, _, _ := strings.Cut(read("/proc/uptime"), " ")
	return []string{
		fmt.Sprintf("kernel %s, pid 1 %s, %d CPUs", unix.ByteSliceToString(uts.Release[:]), read("/proc/1/comm"), runtime.NumCPU()),
		"/sys/fs/cgroup is " + cgfs + ", controllers: " + read("/sys/fs/cgroup/cgroup.controllers") + "; root subtree_control: " + read("/sys/fs/cgroup/cgroup.subtree_control"),
		"runner cgroup " + read("/proc/self/cgroup") + ", uptime " + uptime + "s",
	}
}
