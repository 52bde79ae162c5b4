package revocation_test

import (
	"crypto/x509"

	"github.com/mutual-tls/mutual/internal/pki"
)

// proxyID is the identity the watchers and staplers under test hold.
const proxyID = "spiffe://example.org/ns/prod/proxy"

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }
