package proxy_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestFederatedPeerWithOurRevokedSerial attacks the revocation check of a
// proxy that admits a federated partner: our CA's revoked serials judge
// only certificates our CA issued. The partner's certificate whose serial
// equals one of ours that is revoked is admitted (the policy names it);
// our revoked certificate with that serial is refused.
func TestFederatedPeerWithOurRevokedSerial(t *testing.T) {
	w := newWorld(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	victim := w.ca.Leaf(t, webID)
	serial := victim.Leaf().SerialNumber
	peer := partner.Leaf(t, "spiffe://partner.example/ns/prod/web",
		testca.Edit(func(c *x509.Certificate) { c.SerialNumber = new(big.Int).Set(serial) }))

	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: serial, RevocationTime: time.Now()}}},
		w.ca.Issuer.Cert, w.ca.Issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/crl/"+revocation.IssuerKeyID(w.ca.Issuer.Cert)+".crl" {
			rw.Write(der)
			return
		}
		http.Error(rw, "no feed here", http.StatusServiceUnavailable)
	}))
	defer crl.Close()
	rv := &revocation.Watcher{CAURLs: []string{crl.URL}, Source: w.src, CRLInterval: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testwait.Eventually(t, func() bool { return rv.Revoked(pki.FormatSerial(serial)) && rv.Current() == nil }, "the CRL was not learnt")

	p, err := authz.Parse([]byte("rules:\n  - ids: [\"spiffe://partner.example/ns/prod/*\", \"" + webID + "\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	bundles := w.bundleWith(partner)
	r := runInbound(t, w, proxy.InboundConfig{SVID: w.src, Bundle: bundles, Target: testnet.Echo(t), Policy: proxy.StaticPolicy{P: p}, PeerCheck: rv.Check})
	if _, err := testnet.RoundTrip(r.addr, w.clientTLS(peer), "hello"); err != nil {
		t.Errorf("the partner's certificate with a serial we revoked was refused: %v", err)
	}
	if _, err := testnet.RoundTrip(r.addr, w.clientTLS(victim), "hello"); err == nil {
		t.Error("our revoked certificate was admitted")
	}
	good := w.ca.Leaf(t, webID)
	if _, err := testnet.RoundTrip(r.addr, w.clientTLS(good), "hello"); err != nil {
		t.Errorf("our unrevoked certificate was refused: %v", err)
	}
}
