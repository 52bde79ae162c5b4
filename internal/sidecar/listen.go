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
// A proxy that does not know the revocation status yet waits so: the
// client retries, where a connection accepted then closed would look like
// a server bug.
//
// The port is bound without SO_REUSEADDR: a socket bound with it and not
// listening lets any local user bind the same port and listen first (no
// owner check), taking the plaintext side of the proxy. When that bind is
// refused because old connections of a previous run are in TIME_WAIT (or
// another process holds the port), the port is listened on at once, as
// net.Listen does (a listening socket keeps other binds out), and clients
// wait in its backlog until the proxy accepts.
type boundPort struct {
	fd   int          // -1 once listening or closed
	ln   net.Listener // listening already (the fallback above), until listen
	addr net.Addr
}

// bindTCP binds address (host:port, as net.Listen takes it: an empty or
// unspecified host, 0.0.0.0 or ::, is every address of both families)
// without listening, or listens on it when it cannot (see boundPort).
func bindTCP(address string) (*boundPort, error) {
	b, err := bindOnly(address)
	if !errors.Is(err, syscall.EADDRINUSE) {
		return b, err
	}
	ln, lerr := net.Listen("tcp", address)
	if lerr != nil {
		return nil, lerr
	}
	return &boundPort{fd: -1, ln: ln, addr: ln.Addr()}, nil
}

func bindOnly(address string) (*boundPort, error) {
	ta, err := net.ResolveTCPAddr("tcp", address)
	if err != nil {
		return nil, err
	}
	if ta.IP == nil || ta.IP.IsUnspecified() { // as net.Listen: both families
		b, err := bindFamily(syscall.AF_INET6, &net.TCPAddr{IP: net.IPv6zero, Port: ta.Port}, false)
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
	if ln := b.ln; ln != nil {
		b.ln = nil
		return ln, nil
	}
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
	if b.ln != nil {
		b.ln.Close()
		b.ln = nil
	}
	if b.fd >= 0 {
		syscall.Close(b.fd)
		b.fd = -1
	}
}
