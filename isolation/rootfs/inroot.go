package rootfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// root is the directory that becomes "/", held open so every path below it
// is resolved by the kernel as if it were the root (RESOLVE_IN_ROOT): ".."
// stops at it and absolute symlinks start from it.
type root struct {
	fd   int
	path string
}

const (
	dirFlags  = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
	inRoot    = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS
	noSymlink = unix.RESOLVE_NO_SYMLINKS
)

func openRoot(path string) (*root, error) {
	fd, err := unix.Open(path, dirFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", path, err)
	}
	return &root{fd: fd, path: path}, nil
}

func (r *root) close() { unix.Close(r.fd) }

// open resolves rel inside the root.
func (r *root) open(rel string, flags uint64, resolve uint64) (int, error) {
	rel = relative(rel)
	for {
		fd, err := unix.Openat2(r.fd, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve})
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // a concurrent rename elsewhere in the kernel; retry
		}
		return fd, err
	}
}

// mkdirAll returns an O_PATH descriptor of directory rel, creating missing
// components (mode 0755). strict refuses symlinks anywhere in the path, for
// the mount points nsnet owns (/proc, /sys, /dev, ...).
func (r *root) mkdirAll(rel string, strict bool) (int, error) {
	resolve := uint64(inRoot)
	if strict {
		resolve |= noSymlink
	}
	parts := strings.Split(relative(rel), "/")
	parent, err := unix.Dup(r.fd)
	if err != nil {
		return -1, err
	}
	for i := range parts {
		if parts[i] == "." {
			continue
		}
		p := strings.Join(parts[:i+1], "/")
		fd, err := r.open(p, dirFlags, resolve)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(parent, parts[i], 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(parent)
				return -1, fmt.Errorf("creating %s: %w", containerPath(p), err)
			}
			fd, err = r.open(p, dirFlags, resolve)
		}
		unix.Close(parent)
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", containerPath(p), err)
		}
		parent = fd
	}
	return parent, nil
}

// mkfile returns an O_PATH descriptor of rel, creating an empty file (and
// its parent directories) when it is missing.
func (r *root) mkfile(rel string, strict bool) (int, error) {
	resolve := uint64(inRoot)
	if strict {
		resolve |= noSymlink
	}
	fd, err := r.open(rel, unix.O_PATH, resolve)
	if !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return -1, fmt.Errorf("opening %s: %w", containerPath(rel), err)
		}
		return fd, nil
	}
	dir, err := r.mkdirAll(filepath.Dir(relative(rel)), strict)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dir)
	// O_EXCL never follows a symlink, so a dangling one cannot redirect
	// the creation.
	f, err := unix.Openat(dir, filepath.Base(rel), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return -1, fmt.Errorf("creating %s: %w", containerPath(rel), err)
	}
	unix.Close(f)
	if fd, err = r.open(rel, unix.O_PATH, resolve); err != nil {
		return -1, fmt.Errorf("opening %s: %w", containerPath(rel), err)
	}
	return fd, nil
}

// mountNew mounts a fresh filesystem of type fstype on directory rel.
func (r *root) mountNew(rel, fstype string, flags uintptr, data string) error {
	fd, err := r.mkdirAll(rel, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount(fstype, fdPath(fd), fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", fstype, containerPath(rel), err)
	}
	return nil
}

// bind mounts src (recursively) on rel, creating the mount point to match
// src's type, then makes the new mount read-only and/or nodev. Symlinks in
// rel are followed, inside the root.
func (r *root) bind(src *os.File, rel string, readOnly, nodev bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return fmt.Errorf("inspecting %s: %w", src.Name(), err)
	}
	create := r.mkfile
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		create = r.mkdirAll
	}
	target, err := create(rel, false)
	if err != nil {
		return err
	}
	if err := refuseKernelFS(target, rel); err != nil {
		unix.Close(target)
		return err
	}
	err = unix.Mount(fdPath(int(src.Fd())), fdPath(target), "", unix.MS_BIND|unix.MS_REC, "")
	unix.Close(target)
	if err != nil {
		return fmt.Errorf("binding %s on %s: %w", src.Name(), containerPath(rel), err)
	}
	var attr uint64
	if readOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	if nodev {
		attr |= unix.MOUNT_ATTR_NODEV
	}
	if attr == 0 {
		return nil
	}
	// The descriptor used as the target names the covered directory, not
	// the new mount; resolving the path again lands on the mount.
	mnt, err := r.open(rel, unix.O_PATH, inRoot)
	if err != nil {
		return fmt.Errorf("opening %s: %w", containerPath(rel), err)
	}
	defer unix.Close(mnt)
	if err := setAttr(mnt, attr, true); err != nil {
		return fmt.Errorf("restricting %s: %w", containerPath(rel), err)
	}
	return nil
}

// refuseKernelFS keeps binds off procfs and sysfs, even when a symlink in
// the image leads there: covering /proc would undo the masking and the
// container's view of its own processes.
func refuseKernelFS(fd int, rel string) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("inspecting %s: %w", containerPath(rel), err)
	}
	if st.Type == unix.PROC_SUPER_MAGIC || st.Type == unix.SYSFS_MAGIC {
		return fmt.Errorf("refusing to mount over %s: it is in /proc or /sys", containerPath(rel))
	}
	return nil
}

// fdPath names an open descriptor through the host's /proc, which mount(2)
// follows to exactly the file the descriptor holds.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func relative(p string) string {
	p = strings.TrimLeft(filepath.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}
