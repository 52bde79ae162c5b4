package revocation_test

import (
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// proxyID is the identity the watchers and staplers under test hold.
const proxyID = "spiffe://example.org/ns/prod/proxy"

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }

// proxySource saves id, a leaf of c (proxyID when empty), in a directory and
// serves it from there, as a proxy's watcher holds its identity.
func proxySource(t testing.TB, c *testca.CA, id *identity.Identity) *identity.DirSource {
	t.Helper()
	if id == nil {
		id = c.Leaf(t, proxyID)
	}
	dir := filepath.Join(t.TempDir(), "id")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	return src
}
