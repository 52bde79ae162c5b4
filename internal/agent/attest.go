package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"

	"github.com/mutual-tls/mutual/internal/selector"
)

// peerCreds is a gRPC transport credential for Unix sockets that reads the
// caller's credentials (SO_PEERCRED) when the connection is accepted. It
// adds no encryption: the socket is local.
type peerCreds struct{}

// callerInfo is the credentials.AuthInfo peerCreds attaches to a connection.
type callerInfo struct {
	credentials.CommonAuthInfo
	cred *unix.Ucred
	err  error
}

func (callerInfo) AuthType() string { return "peercred" }

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := callerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		info.err = errors.New("not a Unix socket connection")
		return c, info, nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		info.err = err
		return c, info, nil
	}
	cerr := raw.Control(func(fd uintptr) {
		info.cred, info.err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr != nil && info.err == nil {
		info.err = cerr
	}
	return c, info, nil
}

func (peerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, callerInfo{}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }

// attestor turns peer credentials into a selector.Workload, reading
// /proc/PID/exe for the executable's path and hash.
type attestor struct {
	procRoot string // "/proc"; tests may point elsewhere

	mu     sync.Mutex
	hashes map[string]string // "path|size|mtime" → sha256
}

func newAttestor() *attestor { return &attestor{procRoot: "/proc", hashes: map[string]string{}} }

// attest describes the process behind cred. A process whose executable
// cannot be read still gets its uid and gid (path and hash stay empty, so
// selectors on them do not match).
func (a *attestor) attest(cred *unix.Ucred) selector.Workload {
	w := selector.Workload{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(cred.Uid), 10)); err == nil {
		w.User = u.Username
	}
	exe := fmt.Sprintf("%s/%d/exe", a.procRoot, cred.Pid)
	if p, err := os.Readlink(exe); err == nil {
		w.Path = p
	}
	if h, err := a.hash(exe); err == nil {
		w.SHA256 = h
	}
	return w
}

// hash returns the SHA-256 of the executable, cached by path, size and
// modification time.
func (a *attestor) hash(exe string) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	target, _ := os.Readlink(exe)
	key := fmt.Sprintf("%s|%d|%d", target, st.Size(), st.ModTime().UnixNano())
	a.mu.Lock()
	h, ok := a.hashes[key]
	a.mu.Unlock()
	if ok {
		return h, nil
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return "", err
	}
	h = hex.EncodeToString(sum.Sum(nil))
	a.mu.Lock()
	if len(a.hashes) > 1000 {
		a.hashes = map[string]string{}
	}
	a.hashes[key] = h
	a.mu.Unlock()
	return h, nil
}
