package revocation_test

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pki"
)

// proxyID is the identity the watchers and staplers under test hold.
const proxyID = "spiffe://example.org/ns/prod/proxy"

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }

// eventually polls cond every 20ms until it holds or the safety timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
