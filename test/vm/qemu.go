package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Disk is a raw image attached as a virtio disk.
type Disk struct {
	Path string
	// Serial shows up in the guest's /sys/block/vdX/serial, so the guest
	// can find a disk whatever its order.
	Serial string
	// Snapshot keeps the image unchanged: the guest's writes go to a
	// temporary overlay qemu deletes on exit.
	Snapshot bool
}

// Machine is one qemu boot.
type Machine struct {
	Kernel    string // uncompressed vmlinux, booted through PVH
	Initrd    string
	Cmdline   string
	Disks     []Disk
	MemoryMiB int
	CPUs      int
	// Accel is "kvm" or "tcg"; see Accel.
	Accel string
	// ConsoleLog receives the first serial port: kernel and init messages.
	ConsoleLog string
	// Timeout bounds the whole boot: qemu runs under timeout(1).
	Timeout time.Duration
	// TempDir receives qemu's temporary files (the overlays of snapshot
	// disks) instead of /var/tmp.
	TempDir string
}

var vmxSVM = regexp.MustCompile(`(?m)^flags\s*:.*\b(vmx|svm)\b`)

// Accel chooses KVM only when the CPU flags in cpuinfo show hardware
// virtualisation. /dev/kvm alone is not enough: a PVM-backed KVM opens fine
// and then cannot run a stock kernel, and qemu does not fall back to TCG.
func Accel(cpuinfo []byte) string {
	if vmxSVM.Match(cpuinfo) {
		return "kvm"
	}
	return "tcg"
}

// Args is the qemu-system-x86_64 command line (without the program name).
// The second serial port goes to qemu's stdout and carries only the test
// results; there is no network, display, monitor or reboot.
func (m Machine) Args() []string {
	cpu := "max"
	if m.Accel == "kvm" {
		cpu = "host"
	}
	args := []string{
		"-accel", m.Accel, "-cpu", cpu,
		"-m", strconv.Itoa(m.MemoryMiB), "-smp", strconv.Itoa(m.CPUs),
		"-nodefaults", "-no-user-config", "-nic", "none",
		"-display", "none", "-vga", "none", "-monitor", "none",
		"-no-reboot",
		"-kernel", m.Kernel, "-initrd", m.Initrd, "-append", m.Cmdline,
		"-serial", "file:" + m.ConsoleLog, "-serial", "stdio",
	}
	for i, d := range m.Disks {
		id := "disk" + strconv.Itoa(i)
		drive := "file=" + d.Path + ",if=none,id=" + id + ",format=raw"
		if d.Snapshot {
			drive += ",snapshot=on"
		}
		dev := "virtio-blk-pci,drive=" + id
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		args = append(args, "-drive", drive, "-device", dev)
	}
	return args
}

// ErrTimeout means timeout(1) stopped qemu.
var ErrTimeout = errors.New("the VM timed out")

// Run boots the machine and hands qemu's stdout (the results port) to
// results until qemu exits. qemu runs under timeout(1), in its own process
// group, which is killed if ctx ends first. A non-zero qemu exit is an error.
func (m Machine) Run(ctx context.Context, results func(io.Reader) error) error {
	secs := strconv.Itoa(int(m.Timeout.Seconds() + 0.5))
	args := append([]string{"--kill-after=10", secs, "qemu-system-x86_64"}, m.Args()...)
	cmd := exec.Command("timeout", args...)
	// Pdeathsig: if this process dies without cleaning up, timeout(1) gets
	// TERM and passes it on to qemu.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if m.TempDir != "" {
		cmd.Env = append(os.Environ(), "TMPDIR="+m.TempDir)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("qemu stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qemu: %w", err)
	}
	pgid := cmd.Process.Pid
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			// timeout(1) passes TERM on to qemu; KILL follows if that hangs.
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
		case <-stopped:
		}
	}()
	rerr := results(out)
	if rerr != nil {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	// Drain whatever results did not read so qemu never blocks on stdout.
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	close(stopped)
	if rerr != nil {
		return rerr
	}
	if ctx.Err() != nil {
		return fmt.Errorf("VM stopped: %w", ctx.Err())
	}
	if werr != nil {
		var ee *exec.ExitError
		if errors.As(werr, &ee) && (ee.ExitCode() == 124 || ee.ExitCode() == 137) {
			return fmt.Errorf("%w after %s", ErrTimeout, m.Timeout)
		}
		return fmt.Errorf("qemu: %w: %s", werr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// TailFile returns the last n lines of a file, for showing the console log
// of a failed boot.
func TailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	return tail(string(data), n)
}
