//go:build unix

package identity

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// How WriteDir puts a set in place (issue 12, item 2; DESIGN "Agent ↔ local
// processes").
//
// With an Owner, the directory DIR and every directory above it are checked
// first: no user other than root, the writer and (for DIR itself) the owner
// may be able to write them, so no one else can swap a name the writer
// uses. DIR is then opened once and everything happens relative to that
// descriptor: nothing is ever chowned or chmodded by path.

const (
	dataLink      = setLink
	versionPrefix = ".mutual-"
	linkPrefix    = ".tmp-link-"
)

// checkDir checks st, the directory path: owned by root, the writer, or
// (when mayOwn) the owner uid; writable by no one else.
func checkDir(path string, st *unix.Stat_t, owner int, mayOwn bool) error {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return &UnsafeDirError{path, "not a directory"}
	}
	self := uint32(os.Geteuid())
	switch {
	case st.Uid == 0 || st.Uid == self:
	case mayOwn && st.Uid == uint32(owner):
	default:
		return &UnsafeDirError{path, fmt.Sprintf("owned by uid %d", st.Uid)}
	}
	sticky := st.Mode&unix.S_ISVTX != 0
	if st.Mode&0o002 != 0 && !(sticky && !mayOwn) {
		return &UnsafeDirError{path, "writable by every user"}
	}
	if st.Mode&0o020 != 0 && st.Gid != 0 && !(sticky && !mayOwn) {
		return &UnsafeDirError{path, fmt.Sprintf("writable by group %d", st.Gid)}
	}
	return nil
}

// prepareDir creates dir if missing and, for an owner, checks it and the
// directories above it.
func prepareDir(dir string, owner *Owner) error {
	fd, err := openDir(dir, owner)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// openDir creates dir if missing, checks it and the directories above it
// when the files are for an owner, and opens it.
func openDir(dir string, owner *Owner) (int, error) {
	if owner == nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return -1, fmt.Errorf("identity directory: %w", err)
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("identity directory %s: %w", dir, err)
		}
		return fd, nil
	}
	// The directories that exist are checked before anything is created
	// under them.
	existing := filepath.Clean(dir)
	for {
		if _, err := os.Lstat(existing); err == nil || existing == "/" {
			break
		}
		existing = filepath.Dir(existing)
	}
	if err := checkAncestors(dir, existing, owner.UID, existing == filepath.Clean(dir)); err != nil {
		return -1, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return -1, fmt.Errorf("identity directory: %w", err)
	}
	if err := checkAncestors(dir, dir, owner.UID, true); err != nil {
		return -1, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("identity directory %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("identity directory %s: %w", dir, err)
	}
	if err := checkDir(dir, &st, owner.UID, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkAncestors checks the directories above p (with symbolic links
// resolved), and p itself when self (as the directory written, which may
// belong to the owner).
func checkAncestors(dir, p string, owner int, self bool) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("identity directory %s: %w", dir, err)
	}
	if self {
		var st unix.Stat_t
		if err := unix.Lstat(real, &st); err != nil {
			return fmt.Errorf("identity directory %s: %w", dir, err)
		}
		if err := checkDir(real, &st, owner, true); err != nil {
			return err
		}
		real = filepath.Dir(real)
	}
	for q := real; ; q = filepath.Dir(q) {
		var st unix.Stat_t
		if err := unix.Lstat(q, &st); err != nil {
			return fmt.Errorf("identity directory %s: %s: %w", dir, q, err)
		}
		if err := checkDir(q, &st, owner, false); err != nil {
			return err
		}
		if q == "/" {
			return nil
		}
	}
}

func randomName(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// writeSet puts files into dir as one set, each owned by the owner (when
// the writer runs as root) with its mode.
func writeSet(dir string, files []dirFile, owner *Owner) error {
	dfd, err := openDir(dir, owner)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	version := randomName(versionPrefix)
	if err := unix.Mkdirat(dfd, version, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, version), err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(filepath.Join(dir, version))
		}
	}()
	vfd, err := unix.Openat(dfd, version, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, version), err)
	}
	defer unix.Close(vfd)
	// 0755 whatever the writer's umask: the owner reads through it.
	if err := unix.Fchmod(vfd, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, version), err)
	}
	if err := writeFiles(vfd, files, owner); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, version), err)
	}
	// The switch: one rename makes the whole set current.
	if err := replaceSymlink(dfd, version, dataLink); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Join(dir, dataLink), err)
	}
	done = true
	current := map[string]bool{}
	for _, f := range files {
		name := f.top()
		if current[name] {
			continue
		}
		current[name] = true
		target := dataLink + "/" + name
		if cur, err := readlinkat(dfd, name); err == nil && cur == target {
			continue
		}
		if err := replaceSymlink(dfd, target, name); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
		}
	}
	unix.Fsync(dfd)
	// Earlier sets (and any left by a crash) are no longer reachable; names
	// of an earlier set that this one lacks (another format or name, or
	// federated/ when no federated bundle is left) go.
	if d, err := os.ReadDir(dir); err == nil {
		for _, e := range d {
			switch n := e.Name(); {
			case strings.HasPrefix(n, versionPrefix) && n != version:
				// os.RemoveAll unlinks a symbolic link rather than
				// following it, and descends with openat.
				os.RemoveAll(filepath.Join(dir, n))
			case strings.HasPrefix(n, linkPrefix):
				unix.Unlinkat(dfd, n, 0) // left by a crash between symlink and rename
			case e.Type()&os.ModeSymlink != 0 && !current[n] && n != dataLink:
				if cur, err := readlinkat(dfd, n); err == nil && strings.HasPrefix(cur, dataLink+"/") {
					unix.Unlinkat(dfd, n, 0)
				}
			}
		}
	}
	return nil
}

// writeFiles writes files into the new set's directory vfd, creating
// FederatedDir in it for the federated bundles, and syncs what it made.
func writeFiles(vfd int, files []dirFile, owner *Owner) error {
	sub := -1
	defer func() {
		if sub >= 0 {
			unix.Close(sub)
		}
	}()
	for _, f := range files {
		at, name := vfd, f.name
		if top, rest, ok := strings.Cut(f.name, "/"); ok {
			if sub < 0 {
				if err := unix.Mkdirat(vfd, top, 0o755); err != nil {
					return fmt.Errorf("%s: %w", top, err)
				}
				fd, err := unix.Openat(vfd, top, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("%s: %w", top, err)
				}
				sub = fd
				if err := unix.Fchmod(sub, 0o755); err != nil {
					return fmt.Errorf("%s: %w", top, err)
				}
			}
			at, name = sub, rest
		}
		if err := writeAt(at, dirFile{name, f.data, f.mode}, owner); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if sub >= 0 {
		if err := unix.Fsync(sub); err != nil {
			return err
		}
	}
	return unix.Fsync(vfd)
}

// writeAt creates f in the directory dfd: exclusively, never through a
// link, owner and mode set on the descriptor before the data is written.
func writeAt(dfd int, f dirFile, owner *Owner) error {
	fd, err := unix.Openat(dfd, f.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	file := os.NewFile(uintptr(fd), f.name)
	defer file.Close()
	if owner != nil && os.Geteuid() == 0 {
		if err := unix.Fchown(fd, owner.UID, owner.GID); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(fd, uint32(f.mode.Perm())); err != nil {
		return err
	}
	if _, err := file.Write(f.data); err != nil {
		return err
	}
	return file.Sync()
}

// replaceSymlink points name in dfd at target, atomically.
func replaceSymlink(dfd int, target, name string) error {
	tmp := randomName(linkPrefix)
	if err := unix.Symlinkat(target, dfd, tmp); err != nil {
		return err
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return err
	}
	return nil
}

func readlinkat(dfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
