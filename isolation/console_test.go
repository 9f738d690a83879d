package isolation

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTty(t *testing.T) {
	root := needRoot(t)
	for _, init := range []bool{true, false} {
		t.Run("init="+strconv.FormatBool(init), func(t *testing.T) {
			spec := sh(root, `tty; test -t 0 && test -t 1 && test -t 2 && echo terminal; test -c /dev/console && echo console`)
			spec.Tty, spec.Init = true, init
			r := runContainer(t, spec)
			mustSucceed(t, r)
			// The pty's line discipline turns "\n" into "\r\n".
			if got := strings.ReplaceAll(r.stdout, "\r\n", "\n"); got != "/dev/pts/0\nterminal\nconsole\n" {
				t.Fatalf("output %q", r.stdout)
			}
		})
	}
}

// Ctrl-C typed into the container's terminal is turned into SIGINT for
// the command by the pty, with or without the init in between.
func TestTtyInterrupt(t *testing.T) {
	root := needRoot(t)
	for _, init := range []bool{true, false} {
		t.Run("init="+strconv.FormatBool(init), func(t *testing.T) {
			spec := sh(root, `trap "echo INT; exit 7" INT; echo ready; while :; do sleep 0.05; done`)
			spec.Tty, spec.Init = true, init
			inR, inW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer inW.Close()
			outR, outW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			// With a terminal the parent relays stdio itself, so the test
			// keeps its ends open until the container is gone.
			defer inR.Close()
			p := startContainer(t, spec, Options{Stdin: inR, Stdout: outW})
			out := bufio.NewReader(outR)
			if l, _ := out.ReadString('\n'); l != "ready\r\n" {
				t.Fatalf("first line %q", l)
			}
			if _, err := inW.Write([]byte{3}); err != nil {
				t.Fatal(err)
			}
			if code := waitContainer(t, p); code != 7 {
				t.Fatalf("exit code %d, want 7 from the INT trap", code)
			}
			outW.Close()
			rest, _ := io.ReadAll(out)
			if !strings.Contains(string(rest), "INT") {
				t.Fatalf("output after ^C: %q", rest)
			}
		})
	}
}

// A terminal on stdin is raw while the container runs, passes its window
// size on, and is restored afterwards.
func TestTtyCallerTerminal(t *testing.T) {
	root := needRoot(t)
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	term, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	if err := unix.IoctlSetWinsize(int(term.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 77}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}

	spec := sh(root, `stty size; echo ready; read x; echo got $x`)
	spec.Tty = true
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startContainer(t, spec, Options{Stdin: term, Stdout: outW})
	out := bufio.NewReader(outR)
	for _, want := range []string{"33 77\r\n", "ready\r\n"} {
		if l, _ := out.ReadString('\n'); l != want {
			t.Fatalf("line %q, want %q", l, want)
		}
	}
	during, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if during.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Errorf("caller's terminal not raw while the container runs: lflag %#x", during.Lflag)
	}
	// Typing on the caller's terminal reaches the container.
	if _, err := master.Write([]byte("hi\r")); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { done <- waitContainer(t, p) }()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("container did not read the typed line")
	}
	outW.Close()
	rest, _ := io.ReadAll(out)
	if !strings.Contains(string(rest), "got hi") {
		t.Fatalf("output %q", rest)
	}
	after, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Fatalf("caller's terminal not restored: %+v, was %+v", after, before)
	}
}
