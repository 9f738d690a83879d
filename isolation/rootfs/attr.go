package rootfs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// setAttr adds mount attributes (MOUNT_ATTR_RDONLY, _NODEV, ...) to the
// mount whose root fd holds, and to the mounts below it when recursive.
//
// mount_setattr changes only the attributes named, so it never trips over
// the flags a user namespace locks (nosuid, nodev, noexec inherited from
// the host). Kernels older than 5.12 get a bind remount instead, which
// must restate every flag the mount already has and cannot recurse.
func setAttr(fd int, attr uint64, recursive bool) error {
	flags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	err := unix.MountSetattr(fd, "", flags, &unix.MountAttr{Attr_set: attr})
	if !errors.Is(err, unix.ENOSYS) {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("reading mount flags: %w", err)
	}
	ms := uintptr(unix.MS_BIND | unix.MS_REMOUNT)
	for _, f := range []struct {
		st   int64
		ms   uintptr
		attr uint64
	}{
		{unix.ST_RDONLY, unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY},
		{unix.ST_NOSUID, unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME, unix.MOUNT_ATTR_RELATIME},
	} {
		if st.Flags&f.st != 0 || attr&f.attr != 0 {
			ms |= f.ms
		}
	}
	return unix.Mount("", fdPath(fd), "", ms, "")
}
