package sidecar

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// boundPort is a TCP address bound but not yet listening. A port that
// another process listens on fails the bind at once (naming --listen), yet
// the kernel answers a client connecting to the bound port with a reset
// ("connection refused"), as for a service that is not up, until listen.
// (Like every server socket it is bound with SO_REUSEADDR, so that a
// restart is not refused for the old connections in TIME_WAIT; a process
// that starts listening on the port in between makes listen fail, with
// the same clear error.)
// A proxy that does not know the revocation status yet waits so: the
// client retries, where a connection accepted then closed would look like
// a server bug.
type boundPort struct {
	fd   int // -1 once listening or closed
	addr net.Addr
}

// bindTCP binds address (host:port, as net.Listen takes it: an empty or
// unspecified host, 0.0.0.0 or ::, is every address of both families)
// without listening.
func bindTCP(address string) (*boundPort, error) {
	ta, err := net.ResolveTCPAddr("tcp", address)
	if err != nil {
		return nil, err
	}
	if ta.IP == nil || ta.IP.IsUnspecified() { // as net.Listen: both families
		b, err := bindFamily(syscall.AF_INET6, ta, false)
		if err == nil || !errors.Is(err, syscall.EAFNOSUPPORT) {
			return b, err
		}
		ta = &net.TCPAddr{IP: net.IPv4zero, Port: ta.Port}
	}
	if ta.IP.To4() != nil {
		return bindFamily(syscall.AF_INET, ta, false)
	}
	return bindFamily(syscall.AF_INET6, ta, true)
}

func bindFamily(family int, ta *net.TCPAddr, v6only bool) (_ *boundPort, err error) {
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, syscall.IPPROTO_TCP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	defer func() {
		if err != nil {
			syscall.Close(fd)
		}
	}()
	syscall.CloseOnExec(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt", err)
	}
	var sa syscall.Sockaddr
	if family == syscall.AF_INET {
		s := &syscall.SockaddrInet4{Port: ta.Port}
		copy(s.Addr[:], ta.IP.To4())
		sa = s
	} else {
		only := 0
		if v6only {
			only = 1
		}
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, only); err != nil {
			return nil, os.NewSyscallError("setsockopt", err)
		}
		s := &syscall.SockaddrInet6{Port: ta.Port}
		copy(s.Addr[:], ta.IP.To16())
		if ta.Zone != "" {
			ifi, err := net.InterfaceByName(ta.Zone)
			if err != nil {
				return nil, err
			}
			s.ZoneId = uint32(ifi.Index)
		}
		sa = s
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: ta, Err: os.NewSyscallError("bind", err)}
	}
	b := &boundPort{fd: fd, addr: ta}
	if got, err := syscall.Getsockname(fd); err == nil {
		switch a := got.(type) {
		case *syscall.SockaddrInet4:
			b.addr = &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
		case *syscall.SockaddrInet6:
			b.addr = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port, Zone: ta.Zone}
		}
	}
	return b, nil
}

// Addr is the address bound (with the port chosen, for port 0).
func (b *boundPort) Addr() net.Addr { return b.addr }

// listen starts accepting connections on the bound port; the listener
// then owns it.
func (b *boundPort) listen() (net.Listener, error) {
	if b.fd < 0 {
		return nil, fmt.Errorf("listen on %s: %w", b.addr, net.ErrClosed)
	}
	if err := syscall.Listen(b.fd, syscall.SOMAXCONN); err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: b.addr, Err: os.NewSyscallError("listen", err)}
	}
	f := os.NewFile(uintptr(b.fd), "tcp:"+b.addr.String())
	b.fd = -1
	defer f.Close() // FileListener holds its own copy
	return net.FileListener(f)
}

// close releases the port if listen did not take it.
func (b *boundPort) close() {
	if b.fd >= 0 {
		syscall.Close(b.fd)
		b.fd = -1
	}
}
