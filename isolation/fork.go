package isolation

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// forkChild starts cmd, the setup child, from an OS thread of its own
// that ends right after, and returns that thread's id.
//
// With tasks (cgroup v1 "tasks" files) the thread first writes itself
// into them, so the child is born in the container's cgroups, as
// CLONE_INTO_CGROUP does on v2: the kernel moves a thread that moves
// itself without the global lock (and RCU grace period) of moving a
// process, and the child's own threads need no moving. The thread cannot
// go back without writing into the caller's own cgroup, so it ends.
//
// The child's parent-death signal is armed by the child itself when it is
// told to start (see runSetup), which the caller does only after
// waitThreadEnd: the kernel sends that signal when the thread that forked
// a process ends, and once that one is gone the child is tied to this
// process's main thread, which lasts as long as the process. Armed at
// clone (SysProcAttr.Pdeathsig), any thread Go happened to fork from
// would kill the container by ending.
func forkChild(cmd *exec.Cmd, tasks []string) (tid int, err error) {
	type result struct {
		tid int
		err error
	}
	done := make(chan result, 1)
	var fork func()
	fork = func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		if tid == unix.Getpid() {
			// The main thread never ends (Go parks it instead), so
			// this one stays locked while another goroutine, on
			// another thread, forks.
			go fork()
			return
		}
		// Never unlocked: the goroutine's end ends the thread.
		if err := enterTasks(tasks); err != nil {
			done <- result{tid, err}
			return
		}
		done <- result{tid, cmd.Start()}
	}
	go fork()
	r := <-done
	return r.tid, r.err
}

// enterTasks moves the calling thread into the cgroups of the given v1
// "tasks" files.
func enterTasks(tasks []string) error {
	for _, file := range tasks {
		if err := os.WriteFile(file, []byte("0"), 0); err != nil {
			return fmt.Errorf("entering cgroup %s: %w", filepath.Dir(file), err)
		}
	}
	return nil
}

// waitThreadEnd waits until thread tid of this process has ended, which
// follows its goroutine's end within microseconds. It yields rather than
// sleeps: a timer sleep rounds up to a millisecond.
func waitThreadEnd(tid int) {
	pid := unix.Getpid()
	for i := 0; unix.Tgkill(pid, tid, 0) == nil; i++ {
		if i < 10000 {
			runtime.Gosched()
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}
