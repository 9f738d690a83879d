// Package nftconn opens the nftables netlink connections nsnet's plugins
// work with, made so that closing them does not hold up the process.
//
// When an nfnetlink socket is released while nf_tables has transactions
// queued for freeing, the kernel first waits for that work
// (nft_rcv_nl_event flushes it, and it frees only after an RCU grace
// period). Every commit queues its own transactions, and the queue is
// shared by all network namespaces: so the release of a plugin's socket,
// at the latest in its exit, usually waits a grace period, 10-15 ms on the
// test machine, in every CNI ADD and DEL the runtime waits for. A socket
// whose last reference is held by an io_uring fixed-file table is released
// by io_uring's teardown worker once the process has exited: the process
// does not wait, and the socket goes a moment later all the same.
package nftconn

import (
	"sync/atomic"
	"unsafe"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// MaxParked bounds the sockets one process parks: each keeps a ring's
// descriptor open until the process exits. A plugin opens a few; a
// long-lived process opening many (a test binary) closes the rest plainly.
const MaxParked = 32

var parked atomic.Int32

// Open returns a lasting connection in the calling thread's network
// namespace. After CloseLasting its socket is released by io_uring's
// worker once the process exits, or by the close itself where io_uring is
// missing or refused (kernel.io_uring_disabled, seccomp), or beyond
// MaxParked.
func Open() (*nftables.Conn, error) {
	return nftables.New(nftables.AsLasting(), nftables.WithSockOptions(park))
}

// park hands the connection's socket to a ring of its own. It never fails
// the connection: parking only changes who waits for the release.
func park(c *netlink.Conn) error {
	if parked.Add(1) > MaxParked {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	_ = rc.Control(func(fd uintptr) { _ = parkFD(int(fd)) })
	return nil
}

// ioUringParams is struct io_uring_params: 120 bytes, zero on the way in
// but for what the kernel fills.
type ioUringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff, cqOff                                                           [10]uint32
}

const ioringRegisterFiles = 2

// parkFD registers fd's file in the fixed-file table of a new one-entry
// ring whose descriptor stays open (close-on-exec) until the process
// exits. The ring is never used for I/O.
func parkFD(fd int) error {
	var p ioUringParams
	ring, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return errno
	}
	fds := [1]int32{int32(fd)}
	_, _, errno = unix.Syscall6(unix.SYS_IO_URING_REGISTER, ring, ioringRegisterFiles, uintptr(unsafe.Pointer(&fds[0])), 1, 0, 0)
	if errno != 0 {
		unix.Close(int(ring))
		return errno
	}
	return nil
}
