package testport_test

import (
	"net"
	"testing"

	"github.com/mutual-tls/mutual/internal/testport"
)

// TestPortsAreDistinctAndListenable: ports handed out in one test are all
// different and can be listened on.
func TestPortsAreDistinctAndListenable(t *testing.T) {
	seen := map[int]bool{}
	for i := 0; i < 50; i++ {
		p := testport.Port(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
	ln, err := net.Listen("tcp", testport.Addr(t))
	if err != nil {
		t.Fatalf("listen on a reserved port: %v", err)
	}
	ln.Close()
}
