package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"

	"github.com/mutual-tls/mutual/internal/selector"
)

// How a Workload API request is bound to the process that sent it.
//
// SO_PEERCRED names the process that called connect(), but a process can
// connect, fork, and exec another binary while its child speaks on the
// socket; a PID read later may also name another process. So, at accept:
//
//  1. the peer's pidfd (SO_PEERPIDFD, or pidfd_open) pins the process, and
//     its start time and executable (device and inode, through its own
//     /proc/PID/exe link) are recorded: snapshot S1;
//  2. the socket gets SO_PASSCRED, so the kernel labels every chunk of data
//     with the PID of the process that wrote it (and never glues the
//     writes of two processes into one read);
//  3. the agent sends an HTTP/2 PING with a random nonce.
//
// When the request arrives, attestation waits for the PING's answer and
// requires that the answer, and every labelled byte on the connection, was
// written by the pinned process. That process therefore ran code speaking
// this connection after S1. Then snapshot S2 is taken: same start time
// (no PID reuse), same executable as S1 (no exec in between); the path is
// read and the executable hashed through the process's own exe link, never
// by path; then snapshot S3 must match S2, and the pidfd is still alive. A process in another mount namespace has no path or hash
// (its paths name other files): path and sha256 selectors do not match it.

// bindTimeout bounds the wait for the caller's answer to the agent's PING.
const bindTimeout = 5 * time.Second

// peerCreds is a gRPC transport credential for Unix sockets that pins the
// caller at accept (see above). It adds no encryption: the socket is local.
type peerCreds struct{ procRoot string }

// callerInfo is the credentials.AuthInfo peerCreds attaches to a connection.
type callerInfo struct {
	credentials.CommonAuthInfo
	conn *peerConn
	err  error
}

func (callerInfo) AuthType() string { return "peercred" }

// procSnap is what identifies a process at one moment.
type procSnap struct {
	start   string // /proc/PID/stat field 22
	dev     uint64
	ino     uint64
	mntNS   string
	exeErr  error
	statErr error
}

// peerConn is an accepted Workload API connection whose reads are labelled
// with the writer's PID.
type peerConn struct {
	*net.UnixConn
	cred  unix.Ucred
	pidfd int
	s1    procSnap
	nonce [8]byte

	mu      sync.Mutex
	foreign int32         // a PID other than the caller's that wrote on the connection
	bound   chan struct{} // closed when the caller answered the PING, or foreign is set
	closed  bool
	once    sync.Once
	parser  frameParser
	oob     []byte
}

func (peerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, callerInfo{}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }

// ServerHandshake pins the caller. A connection that cannot be pinned is
// still served (the error is reported when a request is attested), so that
// the caller hears why.
func (p peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := callerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		info.err = errors.New("not a Unix socket connection")
		return c, info, nil
	}
	pc := &peerConn{UnixConn: uc, pidfd: -1, bound: make(chan struct{}), oob: make([]byte, 256)}
	raw, err := uc.SyscallConn()
	if err != nil {
		info.err = err
		return c, info, nil
	}
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			serr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		pc.cred = *cred
		// A pidfd pins the process: a PID reused later cannot pass for
		// it. The kernel's own pidfd of the peer (Linux 6.5) first,
		// pidfd_open of the PID otherwise.
		if pfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
			pc.pidfd = pfd
		} else if pfd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
			pc.pidfd = pfd
		} else {
			serr = fmt.Errorf("pidfd of PID %d: %w", cred.Pid, err)
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			serr = fmt.Errorf("SO_PASSCRED: %w", err)
		}
	})
	if cerr != nil && serr == nil {
		serr = cerr
	}
	if serr != nil {
		pc.closeFD()
		info.err = serr
		return c, info, nil
	}
	pc.s1 = snapshot(p.procRoot, pc.cred.Pid)
	if err := pc.alive(); err != nil {
		pc.closeFD()
		info.err = err
		return c, info, nil
	}
	if _, err := rand.Read(pc.nonce[:]); err != nil {
		pc.closeFD()
		return nil, nil, err
	}
	// An empty SETTINGS frame is a valid server preface; the PING after it
	// must be answered by the peer (RFC 9113, 6.7). gRPC's own SETTINGS
	// follow.
	frames := make([]byte, 0, 9+9+8)
	frames = append(frames, 0, 0, 0, 0x4, 0, 0, 0, 0, 0)
	frames = append(frames, 0, 0, 8, 0x6, 0, 0, 0, 0, 0)
	frames = append(frames, pc.nonce[:]...)
	uc.SetWriteDeadline(time.Now().Add(bindTimeout))
	if _, err := uc.Write(frames); err != nil {
		pc.closeFD()
		return nil, nil, fmt.Errorf("workload API: write to the caller: %w", err)
	}
	uc.SetWriteDeadline(time.Time{})
	info.conn = pc
	return pc, info, nil
}

func (c *peerConn) closeFD() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pidfd >= 0 && !c.closed {
		unix.Close(c.pidfd)
	}
	c.closed = true
}

// Close releases the pidfd with the connection.
func (c *peerConn) Close() error {
	c.closeFD()
	return c.UnixConn.Close()
}

// alive reports whether the pinned process still runs (so a /proc/PID read
// just before was of that process, not of another that reused the PID).
func (c *peerConn) alive() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("connection closed")
	}
	err := unix.PidfdSendSignal(c.pidfd, 0, nil, 0)
	if err == nil || errors.Is(err, unix.EPERM) {
		return nil
	}
	return fmt.Errorf("the calling process (PID %d) has exited: %w", c.cred.Pid, err)
}

// Read reads like the connection's Read and records who wrote what: data
// a process other than the caller wrote marks the connection as shared;
// the caller's answer to the PING binds it.
func (c *peerConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, oobn, _, _, err := c.UnixConn.ReadMsgUnix(b, c.oob)
	// ReadMsgUnix is recvmsg: -1 with an error, 0 and no error at the end
	// of the stream. Read must say 0 and io.EOF.
	n, oobn = max(n, 0), max(oobn, 0)
	if n == 0 && err == nil {
		err = io.EOF
	}
	var pid int32
	if oobn > 0 {
		pid = writerPID(c.oob[:oobn])
	}
	if n > 0 {
		c.mu.Lock()
		if pid != 0 && pid != c.cred.Pid && c.foreign == 0 {
			c.foreign = pid
			c.once.Do(func() { close(c.bound) })
		}
		if c.parser.feed(b[:n], pid == c.cred.Pid, c.nonce) {
			c.once.Do(func() { close(c.bound) })
		}
		c.mu.Unlock()
	}
	return n, err
}

// writerPID returns the PID in an SCM_CREDENTIALS message (0 when the data
// carries none: written before SO_PASSCRED was set) and closes any file
// descriptor a caller passed, which the agent never wants.
func writerPID(oob []byte) int32 {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	var pid int32
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			pid = cred.Pid
			continue
		}
		if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}
	return pid
}

// frameParser follows the HTTP/2 frames a client sends, to find its answer
// to the agent's PING.
type frameParser struct {
	preface int     // bytes of the client preface consumed (24 in all)
	hdr     [9]byte // frame header being read
	hdrN    int
	left    int  // payload bytes left in the current frame
	ping    bool // the current frame is a PING ACK of 8 bytes
	pingBuf []byte
	ours    bool // every byte of the current PING came from the caller
}

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// feed consumes data (written by the caller when fromCaller) and reports
// whether it completed a PING ACK carrying nonce, written by the caller.
func (p *frameParser) feed(data []byte, fromCaller bool, nonce [8]byte) bool {
	found := false
	for len(data) > 0 {
		if p.preface < len(clientPreface) {
			k := min(len(clientPreface)-p.preface, len(data))
			p.preface += k
			data = data[k:]
			continue
		}
		if p.left == 0 && p.hdrN < 9 {
			k := copy(p.hdr[p.hdrN:], data)
			p.hdrN += k
			data = data[k:]
			if p.hdrN < 9 {
				continue
			}
			p.left = int(p.hdr[0])<<16 | int(p.hdr[1])<<8 | int(p.hdr[2])
			p.ping = p.hdr[3] == 0x6 && p.hdr[4]&0x1 != 0 && p.left == 8
			p.pingBuf = p.pingBuf[:0]
			p.ours = fromCaller
			if p.left == 0 {
				p.hdrN = 0
			}
			continue
		}
		k := min(p.left, len(data))
		if p.ping {
			p.pingBuf = append(p.pingBuf, data[:k]...)
			p.ours = p.ours && fromCaller
		}
		p.left -= k
		data = data[k:]
		if p.left == 0 {
			p.hdrN = 0
			if p.ping && p.ours && bytes.Equal(p.pingBuf, nonce[:]) {
				found = true
			}
		}
	}
	return found
}

// snapshot reads what identifies the process pid now: its start time, its
// executable (through its own exe link) and its mount namespace.
func snapshot(procRoot string, pid int32) procSnap {
	var s procSnap
	dir := fmt.Sprintf("%s/%d", procRoot, pid)
	s.start, s.statErr = startTime(dir)
	s.mntNS, _ = os.Readlink(dir + "/ns/mnt")
	f, err := os.Open(dir + "/exe")
	if err != nil {
		s.exeErr = err
		return s
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		s.exeErr = err
		return s
	}
	s.dev, s.ino = st.Dev, st.Ino
	return s
}

// startTime returns field 22 of /proc/PID/stat, the process's start time in
// clock ticks since boot: a PID reused by another process has another.
func startTime(dir string) (string, error) {
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return "", err
	}
	// The command name (field 2) is in parentheses and may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", fmt.Errorf("%s/stat: unexpected format", dir)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("%s/stat: unexpected format", dir)
	}
	return f[19], nil // fields after ")" start at field 3
}

// attestor turns a pinned caller into a selector.Workload.
type attestor struct {
	procRoot string // "/proc"
	selfNS   string // the agent's mount namespace

	mu     sync.Mutex
	hashes map[string]string // "dev|ino|size|mtime|ctime" → sha256
}

func newAttestor() *attestor {
	ns, _ := os.Readlink("/proc/self/ns/mnt")
	return &attestor{procRoot: "/proc", selfNS: ns, hashes: map[string]string{}}
}

// errNotBound is returned when a request cannot be tied to the process
// that connected.
var errNotBound = errors.New("the request cannot be bound to the process that connected")

// attest describes the process behind c once the request is bound to it
// (see the comment at the top of this file). uid and gid come from the
// kernel (SO_PEERCRED); path and sha256 are set only when the executable
// is known to be the one the requesting code runs from, in the agent's
// mount namespace. The reason path and hash were left out, if any, is
// returned as note.
func (a *attestor) attest(ctx context.Context, c *peerConn) (w selector.Workload, note string, err error) {
	timer := time.NewTimer(bindTimeout)
	defer timer.Stop()
	select {
	case <-c.bound:
	case <-ctx.Done():
		return w, "", ctx.Err()
	case <-timer.C:
		return w, "", fmt.Errorf("%w: PID %d did not answer the agent's HTTP/2 PING within %s", errNotBound, c.cred.Pid, bindTimeout)
	}
	if pid := c.foreignPID(); pid != 0 {
		return w, "", fmt.Errorf("%w: PID %d connected, but PID %d also wrote on the connection", errNotBound, c.cred.Pid, pid)
	}
	w = selector.Workload{PID: c.cred.Pid, UID: c.cred.Uid, GID: c.cred.Gid}
	if u, err := user.LookupId(strconv.FormatUint(uint64(c.cred.Uid), 10)); err == nil {
		w.User = u.Username
	}
	dir := fmt.Sprintf("%s/%d", a.procRoot, c.cred.Pid)
	s2 := snapshot(a.procRoot, c.cred.Pid)
	var path, sum string
	var herr error
	if s2.exeErr == nil {
		path, _ = os.Readlink(dir + "/exe")
		sum, herr = a.hashExe(dir+"/exe", s2)
	}
	// The path and hash were read between S2 and S3: whatever was read must
	// be of the pinned process, running the same executable as at S1.
	s3 := snapshot(a.procRoot, c.cred.Pid)
	if err := c.alive(); err != nil {
		return w, "", fmt.Errorf("%w: %v", errNotBound, err)
	}
	switch {
	case c.s1.statErr != nil || s2.statErr != nil || s3.statErr != nil || c.s1.start != s2.start || s2.start != s3.start:
		return w, "", fmt.Errorf("%w: PID %d is no longer the process that connected", errNotBound, c.cred.Pid)
	case c.s1.exeErr != nil || s2.exeErr != nil || s3.exeErr != nil:
		note = "executable unreadable"
	case c.s1.dev != s2.dev || c.s1.ino != s2.ino || s2.dev != s3.dev || s2.ino != s3.ino:
		return w, "", fmt.Errorf("%w: PID %d executed another program after it connected", errNotBound, c.cred.Pid)
	case s2.mntNS == "" || s2.mntNS != a.selfNS || c.s1.mntNS != s2.mntNS:
		note = "caller in another mount namespace: path and sha256 selectors do not apply"
	case herr != nil:
		note = "executable unreadable: " + herr.Error()
	default:
		w.Path, w.SHA256 = path, sum
	}
	return w, note, nil
}

func (c *peerConn) foreignPID() int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.foreign
}

// hashExe returns the SHA-256 of the executable the exe link leads to,
// read through the descriptor opened here (which must be the file of
// snapshot s), cached by the file's identity and change time.
func (a *attestor) hashExe(exe string, s procSnap) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	if st.Dev != s.dev || st.Ino != s.ino {
		return "", errors.New("the executable changed while it was read")
	}
	key := fmt.Sprintf("%d|%d|%d|%d.%d|%d.%d", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
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
	// A file written while it was hashed has another change time now.
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil || after.Ctim != st.Ctim || after.Size != st.Size {
		return "", errors.New("the executable changed while it was read")
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
