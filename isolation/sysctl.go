package isolation

import (
	"strings"

	"github.com/nsnet/nsnet/pkg/sysctl"
)

// ipcSysctls are the kernel.* keys the IPC namespace owns; fs.mqueue.*
// belongs to it as well.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true,
	"kernel.sem":    true,
	"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true,
	"kernel.shm_rmid_forced": true,
}

// checkSysctl accepts a key only when the kernel keeps it per namespace and
// the container has that namespace to itself, as runc and crun validate:
// anything else would change the host.
func checkSysctl(key string, hostNet bool) error {
	switch {
	case key == "" || strings.ContainsAny(key, "/ "):
		return invalid("sysctl %q is not a valid key", key)
	case ipcSysctls[key], strings.HasPrefix(key, "fs.mqueue."):
		return nil
	case strings.HasPrefix(key, "net."):
		if hostNet {
			return invalid("sysctl %s: the container shares the host's network namespace", key)
		}
		return nil
	case key == "kernel.domainname":
		return nil
	case key == "kernel.hostname":
		return invalid("sysctl %s: set the hostname instead", key)
	}
	return invalid("sysctl %s is not namespaced or not in a namespace the container owns", key)
}

// writeSysctls runs in the setup child, inside the container's namespaces
// and root, before /proc/sys becomes read-only.
func writeSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := sysctl.Set(sysctl.Path(k), v); err != nil {
			return err
		}
	}
	return nil
}
