package nat

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// startNS is the network namespace the test binary started in. No test may change it: the
// machine's own connectivity runs through it.
var startNS netns.NsHandle = -1

func TestMain(m *testing.M) {
	// TestMain runs before any test switched a thread, so every thread is still in the start netns.
	runtime.LockOSThread()
	ns, err := netns.Get()
	runtime.UnlockOSThread()
	if err != nil {
		fmt.Fprintf(os.Stderr, "reading the start netns: %v\n", err)
		os.Exit(1)
	}
	startNS = ns
	code := m.Run()
	startNS.Close()
	os.Exit(code)
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and netfilter rules in them")
	}
}

// assertNotStartNS stops the test unless the calling thread is in a namespace other than the
// start one. Every helper that touches the kernel calls it first.
func assertNotStartNS(tb testing.TB) {
	tb.Helper()
	cur, err := netns.Get()
	if err != nil {
		tb.Fatalf("reading current netns: %v", err)
	}
	defer cur.Close()
	if !startNS.IsOpen() || cur.Equal(startNS) {
		tb.Fatalf("refusing kernel work: the thread is in the start network namespace")
	}
}

// inThrowawayNS runs fn on the calling goroutine, locked to its thread, inside a fresh
// network namespace that nothing names or mounts: it disappears when fn returns and its
// handle is closed. fn must not start subtests or hand kernel work to other goroutines, which
// would run on other threads in the start namespace.
func inThrowawayNS(tb testing.TB, fn func(ns netns.NsHandle)) {
	tb.Helper()
	requireRoot(tb)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("reading current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		tb.Fatalf("creating netns: %v", err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread stays locked, so the runtime discards it with the goroutine.
			tb.Errorf("returning to the original netns: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		ns.Close()
		orig.Close()
	}()
	assertNotStartNS(tb)
	fn(ns)
}

// newSideNS creates another throw-away namespace without moving the calling thread.
func newSideNS(tb testing.TB) netns.NsHandle {
	tb.Helper()
	var ns netns.NsHandle
	var err error
	doIn(tb, -1, func() error {
		ns, err = netns.New()
		return err
	})
	tb.Cleanup(func() { ns.Close() })
	return ns
}

// doIn runs fn on a new goroutine locked to a thread in ns (ns -1: a new namespace that fn
// creates itself) and fails the test if fn fails.
func doIn(tb testing.TB, ns netns.NsHandle, fn func() error) {
	tb.Helper()
	if err := runIn(ns, fn); err != nil {
		tb.Fatal(err)
	}
}

// runIn runs fn on a new goroutine locked to a thread in ns and waits for it. The thread
// returns to its namespace afterwards, or stays locked so that the runtime discards it.
func runIn(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if ns != -1 {
			if err := netns.Set(ns); err != nil {
				errc <- fmt.Errorf("entering netns: %w", err)
				return
			}
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("returning to the original netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// run executes a command in the calling thread's netns (a child inherits the netns of the
// thread that forks it) and returns its output.
func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	assertNotStartNS(tb)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// raceIn runs job(0) .. job(workers-1) in ns, each on its own thread, all
// released at the same moment to make races likely, and reports their
// errors.
func raceIn(t *testing.T, ns netns.NsHandle, workers int, job func(w int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			errs <- runIn(ns, func() error {
				<-start
				return job(w)
			})
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
