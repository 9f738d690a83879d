// Package testns gives kernel tests a throw-away network namespace, so they
// never touch the namespace the machine's own connectivity runs through.
package testns

import (
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"
)

// New creates an unnamed network namespace and returns a handle to it; it
// is gone once the handle is closed in t.Cleanup. The test is skipped when
// not run as root.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	var (
		created ns.NetNS
		err     error
	)
	done := make(chan struct{})
	// Creating a namespace moves the calling thread into it; do it on a
	// thread that is then thrown away, never returned to the Go scheduler.
	go func() {
		defer close(done)
		runtime.LockOSThread()
		var h netns.NsHandle
		h, err = netns.New()
		if err != nil {
			return
		}
		defer h.Close()
		created, err = ns.GetNS("/proc/self/fd/" + strconv.Itoa(int(h)))
	}()
	<-done
	if err != nil {
		t.Fatalf("creating netns: %v", err)
	}
	t.Cleanup(func() { created.Close() })
	return created
}
