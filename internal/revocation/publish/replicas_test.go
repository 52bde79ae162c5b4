package publish_test

import (
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestReplicasShareRevocations: two CA services on one PostgreSQL
// database. A revocation made at one reaches the other's OCSP answers (even
// one it had cached as good), CRL and push feed.
func TestReplicasShareRevocations(t *testing.T) {
	t.Parallel()
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	c := testca.New(t)
	a := startCAWith(t, c, url)
	b := startCAWith(t, c, url)

	leaf := a.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}).Leaf()
	sub := b.Enroll(t, "spiffe://example.org/ns/prod/proxy", api.TokenRequest{})
	req, _ := ocsp.CreateRequest(leaf, c.Intermediate, nil)
	status := func(e *caEnv) int {
		t.Helper()
		r, err := ocsp.ParseResponseForCert(ocspPost(t, e.ocspURL(), req), leaf, c.Intermediate)
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	if status(b) != ocsp.Good || status(a) != ocsp.Good {
		t.Fatal("not good before revocation")
	}
	fs, err := b.subscribe(t, feedClient(sub.Roots, sub), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, hb := fs.untilHeartbeat(t)

	start := time.Now()
	a.revoke(t, leaf, "keyCompromise")
	if status(a) != ocsp.Revoked {
		t.Fatal("the replica that revoked still answers good")
	}
	testwait.Eventually(t, func() bool { return status(b) == ocsp.Revoked }, "the other replica's OCSP never said revoked")
	t.Logf("the other replica's OCSP said revoked %d ms after the revocation", time.Since(start).Milliseconds())
	ev := fs.next(t)
	for ev.Heartbeat {
		ev = fs.next(t)
	}
	if ev.Serial != serialOf(leaf) || ev.Seq <= hb.Seq {
		t.Fatalf("the other replica's feed sent %+v", ev)
	}
	crl, _ := b.fetchCRL(t)
	if _, ok := crlHas(crl, leaf); !ok {
		t.Fatal("the other replica's CRL lacks the revocation")
	}
}
