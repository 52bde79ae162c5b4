package revocation_test

import (
	"crypto/x509"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// proxyID is the identity the watchers and staplers under test hold.
const proxyID = "spiffe://example.org/ns/prod/proxy"

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }

// proxySource serves id, a leaf of c (proxyID when nil), from a directory,
// as a proxy's watcher holds its identity.
func proxySource(t testing.TB, c *testca.CA, id *identity.Identity) *identity.DirSource {
	t.Helper()
	if id == nil {
		id = c.Leaf(t, proxyID)
	}
	return testca.DirSource(t, id)
}
