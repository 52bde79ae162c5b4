package pki_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
)

// VerifyChain trusts only the roots it is given (none: nothing, never the
// system's), names the certificate it refused, and keeps the x509 error
// reachable with errors.As.
func TestVerifyChainTrustsOnlyGivenRootsAndNamesTheRefused(t *testing.T) {
	ca, is := newIssuer(t)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")
	now := ca.now.Add(time.Hour)
	leaf, err := is.Issue(pki.Leaf{ID: id, PublicKey: testKey(t, pki.KeyEd25519).Public(), TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	chain := []*x509.Certificate{leaf, ca.res.Intermediate}
	roots := []*x509.Certificate{ca.res.Root}
	if chains, err := pki.VerifyChain(chain, roots, now, x509.ExtKeyUsageClientAuth); err != nil || len(chains) != 1 || len(chains[0]) != 3 {
		t.Fatalf("VerifyChain = %v, %v; want one chain leaf, intermediate, root", chains, err)
	}

	_, err = pki.VerifyChain(chain, nil, now)
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Fatalf("no roots: err = %v, want x509.UnknownAuthorityError (trust nothing)", err)
	}
	if !strings.Contains(err.Error(), id.String()) || !strings.Contains(err.Error(), pki.FormatSerial(leaf.SerialNumber)) {
		t.Errorf("error %q does not name %s and its serial", err, id)
	}

	_, err = pki.VerifyChain(chain, roots, leaf.NotAfter.Add(time.Minute))
	var ce x509.CertificateInvalidError
	if !errors.As(err, &ce) || ce.Reason != x509.Expired {
		t.Errorf("after expiry: err = %v, want x509.CertificateInvalidError Expired", err)
	}

	if _, err := pki.VerifyChain(nil, roots, now); err == nil {
		t.Error("an empty chain verified")
	}
}
