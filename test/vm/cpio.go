package vm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Archive writes a cpio archive in the "newc" format the kernel unpacks as
// an initramfs. Writing it here, rather than with cpio(1) over a staged
// directory, lets the image hold device nodes without the host creating
// any, and keeps every owner root whoever builds it.
type Archive struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

// NewArchive starts an archive on w; Close must be called to finish it.
func NewArchive(w io.Writer) *Archive {
	return &Archive{w: bufio.NewWriterSize(w, 1<<20), ino: 1, dirs: map[string]bool{".": true, "/": true}}
}

// Mode bits of cpio entries (the st_mode file type values).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

type header struct {
	name       string
	mode       uint32
	nlink      uint32
	size       int64
	rmaj, rmin uint32
}

func (a *Archive) writeHeader(h header) {
	if a.err != nil {
		return
	}
	a.ino++
	name := strings.TrimPrefix(h.name, "/")
	_, a.err = fmt.Fprintf(a.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		a.ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rmaj, h.rmin, len(name)+1, 0)
	if a.err != nil {
		return
	}
	_, a.err = io.WriteString(a.w, name+"\x00")
	a.pad(110 + int64(len(name)) + 1)
}

// pad aligns the stream to 4 bytes after n bytes of header+name or data.
func (a *Archive) pad(n int64) {
	if a.err != nil {
		return
	}
	if r := n % 4; r != 0 {
		_, a.err = a.w.Write(make([]byte, 4-r))
	}
}

// parents writes the directories above name that were not written yet, so
// the kernel never meets an entry whose directory does not exist.
func (a *Archive) parents(name string) {
	dir := path.Dir(path.Clean("/" + name))
	if a.dirs[dir] {
		return
	}
	a.parents(dir)
	a.Dir(dir, 0o755)
}

// Dir adds a directory (and its missing parents).
func (a *Archive) Dir(name string, perm os.FileMode) {
	name = path.Clean("/" + name)
	if a.dirs[name] {
		return
	}
	a.parents(name)
	a.dirs[name] = true
	a.writeHeader(header{name: name, mode: modeDir | permBits(perm), nlink: 2})
}

// permBits keeps the sticky bit, which /tmp needs, next to the permissions.
func permBits(perm os.FileMode) uint32 {
	bits := uint32(perm.Perm())
	if perm&os.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

// File adds a regular file with the given content.
func (a *Archive) File(name string, perm os.FileMode, data []byte) {
	a.parents(name)
	a.writeHeader(header{name: name, mode: modeRegular | uint32(perm.Perm()), nlink: 1, size: int64(len(data))})
	if a.err == nil {
		_, a.err = a.w.Write(data)
	}
	a.pad(int64(len(data)))
}

// CopyFile adds the host file src as name, keeping its permission bits.
func (a *Archive) CopyFile(name, src string) {
	if a.err != nil {
		return
	}
	f, err := os.Open(src)
	if err != nil {
		a.err = fmt.Errorf("adding %s to the initramfs: %w", src, err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		a.err = fmt.Errorf("adding %s to the initramfs: %w", src, err)
		return
	}
	if !st.Mode().IsRegular() {
		a.err = fmt.Errorf("adding %s to the initramfs: not a regular file", src)
		return
	}
	a.parents(name)
	a.writeHeader(header{name: name, mode: modeRegular | uint32(st.Mode().Perm()), nlink: 1, size: st.Size()})
	if a.err != nil {
		return
	}
	n, err := io.Copy(a.w, f)
	if err == nil && n != st.Size() {
		err = fmt.Errorf("size changed while copying (%d, then %d bytes)", st.Size(), n)
	}
	if err != nil {
		a.err = fmt.Errorf("adding %s to the initramfs: %w", src, err)
		return
	}
	a.pad(n)
}

// Symlink adds a symbolic link name pointing at target.
func (a *Archive) Symlink(name, target string) {
	a.parents(name)
	a.writeHeader(header{name: name, mode: modeSymlink | 0o777, nlink: 1, size: int64(len(target))})
	if a.err == nil {
		_, a.err = io.WriteString(a.w, target)
	}
	a.pad(int64(len(target)))
}

// CharDev adds a character device node.
func (a *Archive) CharDev(name string, perm os.FileMode, major, minor uint32) {
	a.parents(name)
	a.writeHeader(header{name: name, mode: modeCharDev | uint32(perm.Perm()), nlink: 1, rmaj: major, rmin: minor})
}

// Close writes the trailer and flushes; it returns the first error of any
// earlier call.
func (a *Archive) Close() error {
	a.writeHeader(header{name: "TRAILER!!!", nlink: 1})
	if a.err == nil {
		a.err = a.w.Flush()
	}
	return a.err
}
