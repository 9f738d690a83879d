package vm

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Plan is what the guest runner executes; the host writes it as JSON into
// the image.
type Plan struct {
	// Output is the guest path the results go to: the second serial port,
	// which carries nothing else.
	Output string `json:"output"`
	// Env is the whole environment of every test binary.
	Env []string `json:"env"`
	// ScratchSerial is the serial number of the virtio disk tests may
	// throttle; the runner exports its device as NSNET_VM_DISK.
	ScratchSerial string        `json:"scratchSerial"`
	Packages      []PlanPackage `json:"packages"`
}

// PlanPackage is one test binary to run.
type PlanPackage struct {
	// Name is the package as the host named it (./isolation/cgroups); the
	// results carry it.
	Name   string   `json:"name"`
	Binary string   `json:"binary"`
	Dir    string   `json:"dir"` // working directory, with the package's testdata
	Args   []string `json:"args"`
	// Timeout is when the runner kills the binary's process group; the
	// binary's own -test.timeout should fire first and name the hung test.
	Timeout time.Duration `json:"timeout"`
}

// Framing lines the runner writes around each package's output. Each is a
// whole line of its own.
const (
	markInfo  = "##vmtest info "
	markStart = "##vmtest start "
	markEnd   = "##vmtest end "
	markDone  = "##vmtest done"
)

// InfoLine, StartLine, EndLine and DoneLine format the framing lines.
func InfoLine(text string) string { return markInfo + text + "\n" }

// StartLine opens the output of package name.
func StartLine(name string) string { return markStart + name + "\n" }

// EndLine closes the output of package name: its exit code (-1: killed by
// the runner's timeout) and how long it ran.
func EndLine(name string, code int, elapsed time.Duration) string {
	return fmt.Sprintf("%s%s rc=%d elapsed=%.3fs\n", markEnd, name, code, elapsed.Seconds())
}

// DoneLine says the runner finished every package.
func DoneLine() string { return markDone + "\n" }

// PackageResult is how one test binary ended in the guest.
type PackageResult struct {
	Name    string
	Code    int
	Elapsed time.Duration
}

// Report is what the guest's results stream said.
type Report struct {
	Packages []PackageResult
	// Running is the package whose output was open when the stream ended.
	Running string
	Done    bool
}

// Stream copies the guest's results from r to w the way `go test -v` prints
// them (the test binary's own lines, then "ok"/"FAIL" with the package and
// its time) and returns what the framing lines said. Carriage returns a tty
// adds are dropped.
func Stream(r io.Reader, w io.Writer) (Report, error) {
	var rep Report
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if werr := rep.line(strings.TrimRight(line, "\r\n"), w); werr != nil {
				return rep, werr
			}
		}
		if err == io.EOF {
			return rep, nil
		}
		if err != nil {
			return rep, fmt.Errorf("reading guest results: %w", err)
		}
	}
}

func (rep *Report) line(line string, w io.Writer) error {
	var err error
	switch {
	case strings.HasPrefix(line, markInfo):
		_, err = fmt.Fprintf(w, "vmtest: guest %s\n", strings.TrimPrefix(line, markInfo))
	case strings.HasPrefix(line, markStart):
		rep.Running = strings.TrimPrefix(line, markStart)
	case strings.HasPrefix(line, markEnd):
		res, perr := parseEnd(strings.TrimPrefix(line, markEnd))
		if perr != nil {
			_, err = fmt.Fprintln(w, line)
			break
		}
		rep.Packages = append(rep.Packages, res)
		rep.Running = ""
		switch {
		case res.Code == 0:
			_, err = fmt.Fprintf(w, "ok  \t%s\t%.3fs\n", res.Name, res.Elapsed.Seconds())
		case res.Code < 0:
			_, err = fmt.Fprintf(w, "FAIL\t%s\t%.3fs (killed by the guest runner's timeout)\n", res.Name, res.Elapsed.Seconds())
		default:
			_, err = fmt.Fprintf(w, "FAIL\t%s\t%.3fs\n", res.Name, res.Elapsed.Seconds())
		}
	case line == markDone:
		rep.Done = true
	default:
		_, err = fmt.Fprintln(w, line)
	}
	return err
}

// parseEnd reads "NAME rc=N elapsed=Xs".
func parseEnd(s string) (PackageResult, error) {
	f := strings.Fields(s)
	if len(f) != 3 || !strings.HasPrefix(f[1], "rc=") || !strings.HasPrefix(f[2], "elapsed=") {
		return PackageResult{}, fmt.Errorf("malformed end line %q", s)
	}
	code, err := strconv.Atoi(strings.TrimPrefix(f[1], "rc="))
	if err != nil {
		return PackageResult{}, fmt.Errorf("malformed end line %q: %w", s, err)
	}
	d, err := time.ParseDuration(strings.TrimPrefix(f[2], "elapsed="))
	if err != nil {
		return PackageResult{}, fmt.Errorf("malformed end line %q: %w", s, err)
	}
	return PackageResult{Name: f[0], Code: code, Elapsed: d}, nil
}

// Failures lists what went wrong compared with the plan: packages that
// failed, never ended, or never ran, and a runner that did not finish.
func (rep Report) Failures(plan Plan) []string {
	var out []string
	ended := map[string]PackageResult{}
	for _, p := range rep.Packages {
		ended[p.Name] = p
	}
	for _, p := range plan.Packages {
		res, ok := ended[p.Name]
		switch {
		case ok && res.Code != 0:
			out = append(out, fmt.Sprintf("%s failed (exit code %d)", p.Name, res.Code))
		case !ok && rep.Running == p.Name:
			out = append(out, fmt.Sprintf("%s did not finish: the VM stopped while it ran", p.Name))
		case !ok:
			out = append(out, fmt.Sprintf("%s never ran", p.Name))
		}
	}
	if !rep.Done {
		out = append(out, "the guest runner did not report completion")
	}
	return out
}
