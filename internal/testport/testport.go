// Package testport hands tests loopback ports for servers that must be told
// their address before they start (a child process, a PostgreSQL server, a
// replica restarted on the same address).
//
// "Listen on port 0, close, pass the number on" races: between the close and
// the child's bind, the kernel may give the port to any outgoing connection
// (it is in the ephemeral range) or to another test process doing the same.
// A port from this package lies below the kernel's ephemeral range, so no
// outgoing connection takes it, and is held by an exclusive lock on a file
// named for it until the test ends, so no other test process on the machine
// hands it out meanwhile.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Addr returns "127.0.0.1:PORT" with a port reserved for t (see Port).
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(t)))
}

// Port reserves a free loopback TCP port below the ephemeral range for the
// rest of t; it fails t when none can be found.
func Port(t testing.TB) int {
	t.Helper()
	lo, hi := portRange()
	dir := filepath.Join(os.TempDir(), "mutual-testports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatalf("testport: %v", err)
	}
	span := hi - lo
	start := rand.IntN(span)
	for i := 0; i < span; i++ {
		port := lo + (start+i)%span
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			t.Fatalf("testport: %v", err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // another test process holds it
			continue
		}
		// Not held by a test; make sure nothing else listens there.
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			f.Close()
			continue
		}
		ln.Close()
		t.Cleanup(func() { f.Close() })
		return port
	}
	t.Fatalf("testport: no free port in %d-%d", lo, hi)
	return 0
}

// portRange is the range below the kernel's ephemeral ports (Linux's
// ip_local_port_range), at most 20000-32767.
func portRange() (lo, hi int) {
	lo, hi = 20000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	var eLo, eHi int
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &eLo, &eHi); err != nil {
		return lo, hi
	}
	if eLo < hi {
		hi = eLo
	}
	if hi-lo < 1000 { // an unusual ephemeral range: take the ports above it
		lo, hi = eHi+1, 65536
		if hi-lo < 1000 {
			lo, hi = 10000, 65536
		}
	}
	return lo, hi
}
