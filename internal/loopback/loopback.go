// Package loopback tells whether an address names only this machine's
// loopback interface: the check behind every "loopback unless a flag says
// otherwise" default (the proxy's plaintext legs, the dashboard without
// mTLS).
//
//	if !loopback.Is(target) && !unsafeTarget {
//		return errors.New("--target: not a loopback address")
//	}
package loopback

import (
	"net"
	"strings"
)

// Is reports whether addr, a HOST:PORT or a bare host (as an HTTP Host
// header may carry), names only the loopback interface: "localhost", or
// an IP address in 127.0.0.0/8 or ::1. Any other DNS name is not loopback,
// whatever it resolves to now: a page of another site may rebind its name
// to 127.0.0.1.
func Is(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	} else if strings.HasPrefix(addr, "[") && strings.HasSuffix(addr, "]") {
		host = addr[1 : len(addr)-1]
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
