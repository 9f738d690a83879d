package veth

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
)

// inHostNS runs the test body with the calling thread in a throw-away
// netns that stands for the host, and puts the thread back afterwards.
func inHostNS(t *testing.T, body func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	host, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err)
		}
		host.Close()
	}()
	body()
}

func TestDeleteLeavesPairOfDyingNetnsToKernel(t *testing.T) {
	inHostNS(t, func() {
		cont, err := testutils.NewNS()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Create("nsnetvt0", "eth0", cont, 1500, nil); err != nil {
			t.Fatal(err)
		}
		l, err := netlinksafe.LinkByName("nsnetvt0")
		if err != nil {
			t.Fatal(err)
		}
		if PeerNetnsDying(l) {
			t.Fatalf("peer netns reported dying while alive (netnsid %d)", l.Attrs().NetNsID)
		}
		// The runtime releases the container's netns: nothing else
		// holds it, so the kernel tears it down in the background.
		if err := cont.Close(); err != nil {
			t.Fatal(err)
		}
		if err := testutils.UnmountNS(cont); err != nil {
			t.Fatal(err)
		}
		sawDying := false
		deadline := time.Now().Add(5 * time.Second)
		for {
			l, err := netlinksafe.LinkByName("nsnetvt0")
			if err != nil {
				break
			}
			// Delete leaves such a pair alone: the kernel must then
			// remove it by itself, which the loop waits for.
			if PeerNetnsDying(l) {
				sawDying = true
				if err := Delete("nsnetvt0"); err != nil {
					t.Fatalf("Delete: %v", err)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("host end still there 5 s after its peer's netns was released (netnsid %d)", l.Attrs().NetNsID)
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("dying peer observed before the pair vanished: %v", sawDying)
	})
}

func TestDeleteRemovesPairWithLivePeer(t *testing.T) {
	inHostNS(t, func() {
		cont, err := testutils.NewNS()
		if err != nil {
			t.Fatal(err)
		}
		defer testutils.UnmountNS(cont)
		defer cont.Close()
		if _, err := Create("nsnetvt1", "eth0", cont, 1500, nil); err != nil {
			t.Fatal(err)
		}
		if err := Delete("nsnetvt1"); err != nil {
			t.Fatal(err)
		}
		if _, err := netlinksafe.LinkByName("nsnetvt1"); err == nil {
			t.Fatal("host end still there after Delete")
		}
		err = cont.Do(func(ns.NetNS) error {
			_, err := netlinksafe.LinkByName("eth0")
			return err
		})
		if err == nil {
			t.Fatal("container end still there after Delete")
		}
	})
}

func TestPeerInSameNetnsIsNotDying(t *testing.T) {
	inHostNS(t, func() {
		la := netlink.NewLinkAttrs()
		la.Name = "nsnetvt2"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "nsnetvt3"}); err != nil {
			t.Fatal(err)
		}
		l, err := netlinksafe.LinkByName("nsnetvt2")
		if err != nil {
			t.Fatal(err)
		}
		if PeerNetnsDying(l) {
			t.Fatalf("a pair within one netns reported as dying (netnsid %d)", l.Attrs().NetNsID)
		}
		if err := Delete("nsnetvt2"); err != nil {
			t.Fatal(err)
		}
	})
}
