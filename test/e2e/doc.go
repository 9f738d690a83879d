// Package e2e runs nsnet's plugins under the CNI clients users put them behind: cnitool,
// containerd driven by ctr and by its CRI plugin (through crictl), and podman's CNI backend.
//
// Every scenario runs its client, the client's daemon and the plugins inside a sandbox host
// network namespace (package harness) and a private mount namespace whose /etc/cni/net.d,
// /opt/cni/bin, /run, /var/lib/cni, /var/lib/containerd, /var/lib/containers and
// /etc/containers are fresh tmpfs mounts, so the shipped conflists in cni-conf/ run unchanged
// and nothing a client writes reaches the machine. Container cgroups go below the test's own
// cgroup. After each scenario the test checks that the root network namespace, the host's
// mount table and the cgroup trees are as they were, and that the sandbox host holds no
// leftovers of the attachment.
//
// The package also tests `make install` and the Kubernetes DaemonSet manifest in cni-conf/.
package e2e
