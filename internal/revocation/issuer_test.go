package revocation_test

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// runWatcher runs w until the test ends and waits until it knows the
// revocation status.
func runWatcher(t *testing.T, w *revocation.Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testwait.Eventually(t, func() bool { return w.Current() == nil }, "the watcher never learnt the revocation status")
}

// wantReason fails unless err is a PeerError for reason (nil: no error).
func wantReason(t *testing.T, what string, err error, reason tlsconfig.Reason) {
	t.Helper()
	var pe *tlsconfig.PeerError
	switch {
	case reason == "" && err != nil:
		t.Fatalf("%s: refused: %v, want accepted", what, err)
	case reason != "" && (!errors.As(err, &pe) || pe.Reason != reason):
		t.Fatalf("%s: %v, want a %s PeerError", what, err, reason)
	}
}

// withSerial issues the leaf with serial n.
func withSerial(n *big.Int) testca.LeafOption {
	return testca.Edit(func(c *x509.Certificate) { c.SerialNumber = new(big.Int).Set(n) })
}

// verified is id's chain as a verified peer chain: leaf, intermediate, root.
func verified(id *identity.Identity) []*x509.Certificate {
	return append(append([]*x509.Certificate{}, id.Chain...), id.Roots...)
}

// TestCheckPartnerSerialCollision: our CA's revoked serials judge only
// certificates our CA issued. A federated partner's certificate whose
// serial equals one of our revoked serials is accepted; ours with that
// serial stays refused, and so does a certificate from our intermediate
// that names the partner's trust domain (an issuer mix-up must not let
// our revoked certificate through).
func TestCheckPartnerSerialCollision(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	victim := c.Leaf(t, "spiffe://example.org/ns/prod/victim")
	serial := victim.Leaf().SerialNumber
	srv, _ := crlServer(t, c, serial)
	w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: proxySource(t, c, nil), CRLInterval: time.Minute}
	runWatcher(t, w)

	wantReason(t, "our revoked certificate", w.Check(victim.ID, verified(victim)), tlsconfig.ReasonRevoked)
	wantReason(t, "our revoked certificate, chain without the root", w.Check(victim.ID, victim.Chain), tlsconfig.ReasonRevoked)

	peer := partner.Leaf(t, "spiffe://partner.example/billing", withSerial(serial))
	if peer.Leaf().SerialNumber.Cmp(serial) != 0 {
		t.Fatal("the partner certificate did not get the colliding serial")
	}
	wantReason(t, "partner certificate with a serial we revoked", w.Check(peer.ID, verified(peer)), "")
	wantReason(t, "partner certificate with a serial we revoked, chain without the root", w.Check(peer.ID, peer.Chain), "")

	// Our intermediate's certificate is ours whatever trust domain the ID
	// given with it names.
	foreignID := spiffeid.RequireFromString("spiffe://partner.example/billing")
	wantReason(t, "our revoked certificate under a partner's ID", w.Check(foreignID, verified(victim)), tlsconfig.ReasonRevoked)
	wantReason(t, "our revoked certificate under a partner's ID, chain without the root", w.Check(foreignID, victim.Chain), tlsconfig.ReasonRevoked)
}

// rotated rotates c's intermediate and returns the CA as it issues after
// the rotation; c keeps issuing from the retired intermediate.
func rotated(t *testing.T, c *testca.CA) *testca.CA {
	t.Helper()
	rot, err := pki.RotateIntermediate(context.Background(), pki.RotateOptions{Dir: c.Dir, Passphrase: []byte(testca.Passphrase), Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := pki.LoadCA(c.Dir, []byte(testca.Passphrase))
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Issuer.Cert.Equal(rot.New) || rot.Old.Equal(rot.New) {
		t.Fatal("the rotation did not change the issuing intermediate")
	}
	n := *c
	n.Issuer, n.Intermediate = loaded.Issuer, rot.New
	return &n
}

// TestCheckAfterIntermediateRotation: after an intermediate rotation the
// watcher follows the CRL of its own (current or retired) intermediate,
// which lists every revoked serial of the CA; a revoked certificate of the
// other intermediate is still refused, an unrevoked one accepted, and
// while the status is unknown every one of ours is refused.
func TestCheckAfterIntermediateRotation(t *testing.T) {
	t.Parallel()
	old := testca.New(t)
	oldVictim := old.Leaf(t, "spiffe://example.org/ns/prod/old-victim")
	oldGood := old.Leaf(t, "spiffe://example.org/ns/prod/old-good")
	oldProxy := old.Leaf(t, proxyID)
	cur := rotated(t, old)
	curVictim := cur.Leaf(t, "spiffe://example.org/ns/prod/new-victim")
	curGood := cur.Leaf(t, "spiffe://example.org/ns/prod/new-good")
	if curVictim.Chain[1].Equal(oldVictim.Chain[1]) {
		t.Fatal("both victims have the same intermediate")
	}
	revoked := []*big.Int{oldVictim.Leaf().SerialNumber, curVictim.Leaf().SerialNumber}
	for _, tc := range []struct {
		name  string
		ca    *testca.CA
		proxy *identity.Identity
	}{
		{"proxy on the new intermediate", cur, cur.Leaf(t, proxyID)},
		{"proxy on the retired intermediate", old, oldProxy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := proxySource(t, tc.ca, tc.proxy)
			blind := &revocation.Watcher{CAURLs: []string{"https://127.0.0.1:1"}, Source: src}
			for _, id := range []*identity.Identity{oldVictim, oldGood, curVictim, curGood} {
				wantReason(t, "unknown status, "+id.ID.String(), blind.Check(id.ID, verified(id)), tlsconfig.ReasonRevocationUnknown)
			}

			srv, _ := crlServer(t, tc.ca, revoked...)
			w := &revocation.Watcher{CAURLs: []string{srv.URL}, Source: src, CRLInterval: time.Minute}
			runWatcher(t, w)
			for _, id := range []*identity.Identity{oldVictim, curVictim} {
				wantReason(t, "revoked "+id.ID.String(), w.Check(id.ID, verified(id)), tlsconfig.ReasonRevoked)
				wantReason(t, "revoked "+id.ID.String()+", chain without the root", w.Check(id.ID, id.Chain), tlsconfig.ReasonRevoked)
			}
			for _, id := range []*identity.Identity{oldGood, curGood} {
				wantReason(t, "good "+id.ID.String(), w.Check(id.ID, verified(id)), "")
			}
		})
	}
}

// TestCheckUnknownStatusRefusesAll: while the watcher does not know the
// revocation status it refuses our certificates, and a partner's too.
func TestCheckUnknownStatusRefusesAll(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	w := &revocation.Watcher{CAURLs: []string{"https://127.0.0.1:1"}, Source: proxySource(t, c, nil)}
	ours := c.Leaf(t, "spiffe://example.org/ns/prod/web")
	theirs := partner.Leaf(t, "spiffe://partner.example/billing")
	wantReason(t, "our certificate", w.Check(ours.ID, verified(ours)), tlsconfig.ReasonRevocationUnknown)
	wantReason(t, "partner certificate", w.Check(theirs.ID, verified(theirs)), tlsconfig.ReasonRevocationUnknown)
}
