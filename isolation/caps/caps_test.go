package caps

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	switch os.Getenv("NSNET_CAPS_TEST_APPLY") {
	case "":
	case "all":
		os.Exit(applyAllAndReport())
	default:
		os.Exit(applyAndReport())
	}
	os.Exit(m.Run())
}

// applyAndReport runs in a re-executed test binary, so the test process
// keeps its own capabilities.
func applyAndReport() int {
	runtime.LockOSThread()
	if err := Apply(Default | Of(unix.CAP_NET_ADMIN)); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	os.Stdout.Write(b)
	return 0
}

// applyAllAndReport runs in a re-executed test binary: it applies a set
// to every thread, with more threads than the runtime's own held by
// goroutines that lock them, and prints the status of each thread.
func applyAllAndReport() int {
	runtime.LockOSThread()
	var started sync.WaitGroup
	hold := make(chan struct{})
	for i := 0; i < 3; i++ {
		started.Add(1)
		go func() {
			runtime.LockOSThread()
			started.Done()
			<-hold
		}()
	}
	started.Wait()
	if err := ApplyAllThreads(Default | Of(unix.CAP_NET_ADMIN)); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			return 1
		}
		os.Stdout.Write(append(b, '\n'))
	}
	return 0
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  bool
	}{
		{"NET_ADMIN", unix.CAP_NET_ADMIN, false},
		{"CAP_NET_ADMIN", unix.CAP_NET_ADMIN, false},
		{"cap_sys_admin", unix.CAP_SYS_ADMIN, false},
		{" chown ", unix.CAP_CHOWN, false},
		{"CHECKPOINT_RESTORE", unix.CAP_CHECKPOINT_RESTORE, false},
		{"Cap_Net_Admin", unix.CAP_NET_ADMIN, false},
		{"cap_\u017fys_admin", 0, true}, // a long s is not an s
		{"\u017fYS_ADMIN", 0, true},
		{"CAP_", 0, true},
		{"NET_ADMINX", 0, true},
		{"", 0, true},
		{"ALL", 0, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.err {
			if !errors.Is(err, ErrUnknown) {
				t.Errorf("Parse(%q) error = %v, want ErrUnknown", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestDefaultIsRuncSetWithoutMknod(t *testing.T) {
	want := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
		"CAP_SYS_CHROOT", "CAP_AUDIT_WRITE", "CAP_SETFCAP"}
	if got := Default.Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Default = %v, want %v", got, want)
	}
	if Default.String() != "00000000a00425fb" {
		t.Fatalf("Default = %s", Default)
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name       string
		privileged bool
		add, drop  []string
		want       Set
		err        bool
	}{
		{name: "default", want: Default},
		{name: "privileged ignores lists", privileged: true, drop: []string{"ALL"}, want: All},
		{name: "add one", add: []string{"NET_ADMIN"}, want: Default | Of(unix.CAP_NET_ADMIN)},
		{name: "drop one", drop: []string{"cap_net_raw"}, want: Default &^ Of(unix.CAP_NET_RAW)},
		{name: "drop all add one", add: []string{"KILL"}, drop: []string{"ALL"}, want: Of(unix.CAP_KILL)},
		{name: "add all drop one", add: []string{"all"}, drop: []string{"SYS_ADMIN"}, want: All &^ Of(unix.CAP_SYS_ADMIN)},
		{name: "drop all", drop: []string{"ALL"}, want: 0},
		{name: "unknown add", add: []string{"FLY"}, err: true},
		{name: "unknown drop", drop: []string{"FLY"}, err: true},
		{name: "conflict", add: []string{"KILL"}, drop: []string{"CAP_KILL"}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(tt.privileged, tt.add, tt.drop)
			if tt.err {
				if err == nil {
					t.Fatalf("Resolve = %v, want an error", got.Names())
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Resolve = %v, %v; want %v", got.Names(), err, tt.want.Names())
			}
		})
	}
}

// runApplyHelper runs this test binary as the helper selected by mode and
// returns the capability status lines it printed: one block per thread,
// separated by empty lines, parsed into fields.
func runApplyHelper(t *testing.T, mode string) []map[string]string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("dropping from the bounding set needs CAP_SETPCAP (root)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "NSNET_CAPS_TEST_APPLY="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var blocks []map[string]string
	for _, status := range strings.Split(strings.TrimSpace(string(out)), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(status, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		blocks = append(blocks, fields)
	}
	return blocks
}

func TestApply(t *testing.T) {
	fields := runApplyHelper(t, "1")[0]
	want := (Default | Of(unix.CAP_NET_ADMIN)).String()
	for k, v := range map[string]string{"CapEff": want, "CapPrm": want, "CapBnd": want, "CapInh": "0000000000000000", "CapAmb": "0000000000000000"} {
		if fields[k] != v {
			t.Errorf("%s = %s, want %s", k, fields[k], v)
		}
	}
}

func TestApplyAllThreads(t *testing.T) {
	threads := runApplyHelper(t, "all")
	if len(threads) < 4 {
		t.Fatalf("helper reported %d threads, want at least 4: %v", len(threads), threads)
	}
	want := (Default | Of(unix.CAP_NET_ADMIN)).String()
	for _, fields := range threads {
		for k, v := range map[string]string{"CapEff": want, "CapPrm": want, "CapInh": "0000000000000000", "CapAmb": "0000000000000000"} {
			if fields[k] != v {
				t.Errorf("thread %s: %s = %s, want %s", fields["Pid"], k, fields[k], v)
			}
		}
	}
}
