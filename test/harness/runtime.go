package harness

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// Runtime drives plugins through libcni, as containerd and CRI-O do, from inside a sandbox host
// netns and with its own result cache, so tests never read or write /var/lib/cni.
type Runtime struct {
	Host *NetNS
	CNI  *libcni.CNIConfig
}

// NewRuntime returns a libcni runtime that finds plugins in cniPath (colon-separated) and caches
// results in a per-test temp dir.
func NewRuntime(t testing.TB, host *NetNS, cniPath string) *Runtime {
	t.Helper()
	return &Runtime{
		Host: host,
		CNI:  libcni.NewCNIConfigWithCacheDir(filepath.SplitList(cniPath), t.TempDir(), nil),
	}
}

// ConfList parses a network configuration list, failing the test when it is invalid.
func ConfList(t testing.TB, conflist string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.ConfListFromBytes([]byte(conflist))
	if err != nil {
		t.Fatalf("parsing conflist: %v\n%s", err, conflist)
	}
	return l
}

// Attachment is the RuntimeConf of attaching container c as ifName under containerID.
func Attachment(c *NetNS, containerID, ifName string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: containerID, NetNS: c.Path(), IfName: ifName}
}

// Add runs ADD through every plugin in the list and caches the result.
func (r *Runtime) Add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := r.Host.Do(func() (err error) {
		res, err = r.CNI.AddNetworkList(context.Background(), list, rt)
		return err
	})
	return res, err
}

// Check runs CHECK with the cached ADD result.
func (r *Runtime) Check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.Host.Do(func() error { return r.CNI.CheckNetworkList(context.Background(), list, rt) })
}

// Del runs DEL in reverse order with the cached ADD result and drops the cache entry.
func (r *Runtime) Del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return r.Host.Do(func() error { return r.CNI.DelNetworkList(context.Background(), list, rt) })
}

// GC runs GC (libcni first DELs cached attachments missing from args); nil args sends no
// valid-attachments key at all.
func (r *Runtime) GC(list *libcni.NetworkConfigList, args *libcni.GCArgs) error {
	return r.Host.Do(func() error { return r.CNI.GCNetworkList(context.Background(), list, args) })
}

// Status runs STATUS through every plugin in the list.
func (r *Runtime) Status(list *libcni.NetworkConfigList) error {
	return r.Host.Do(func() error { return r.CNI.GetStatusNetworkList(context.Background(), list) })
}

// Validate asks every plugin of the list for its VERSION and checks it supports the list's version.
func (r *Runtime) Validate(list *libcni.NetworkConfigList) ([]string, error) {
	var caps []string
	err := r.Host.Do(func() (err error) {
		caps, err = r.CNI.ValidateNetworkList(context.Background(), list)
		return err
	})
	return caps, err
}
