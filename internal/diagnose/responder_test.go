package diagnose_test

import (
	"crypto/rand"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// responder publishes a CA's revocation status as a CA does, over HTTP on
// 127.0.0.1: a CRL (RFC 5280) at /crl and an OCSP responder (RFC 6960) at
// /ocsp, both signed by the CA's intermediate.
type responder struct {
	ca  *testca.CA
	url string

	mu      sync.Mutex
	revoked map[string]bool // serials
	// crlNextUpdate is the CRL's next update; zero means in an hour.
	crlNextUpdate time.Time
	// ocspThisUpdate is when OCSP answers say they were produced; zero
	// means now.
	ocspThisUpdate time.Time
}

func newResponder(t testing.TB, ca *testca.CA) *responder {
	t.Helper()
	r := &responder{ca: ca, revoked: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crl", func(w http.ResponseWriter, _ *http.Request) { w.Write(r.crl(t)) })
	mux.HandleFunc("POST /ocsp", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		oreq, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(r.ocspAnswer(t, oreq.SerialNumber))
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	r.url = s.URL
	return r
}

func (r *responder) revoke(c *x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked[pki.FormatSerial(c.SerialNumber)] = true
}

func (r *responder) crl(t testing.TB) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	next := r.crlNextUpdate
	if next.IsZero() {
		next = now.Add(time.Hour)
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(now.UnixNano()), ThisUpdate: minTime(now.Add(-time.Minute), next.Add(-time.Hour)), NextUpdate: next}
	for s := range r.revoked {
		n, _ := pki.ParseSerial(s)
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now.Add(-time.Minute), ReasonCode: 1})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, r.ca.Issuer.Cert, r.ca.Issuer.Key)
	if err != nil {
		t.Errorf("CRL: %v", err)
	}
	return der
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (r *responder) ocspAnswer(t testing.TB, serial *big.Int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	this := r.ocspThisUpdate
	if this.IsZero() {
		this = time.Now().Add(-time.Minute)
	}
	tmpl := ocsp.Response{Status: ocsp.Good, SerialNumber: serial, ThisUpdate: this, NextUpdate: this.Add(time.Hour)}
	if r.revoked[pki.FormatSerial(serial)] {
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, this.Add(-time.Minute), ocsp.KeyCompromise
	}
	der, err := ocsp.CreateResponse(r.ca.Issuer.Cert, r.ca.Issuer.Cert, tmpl, r.ca.Issuer.Key)
	if err != nil {
		t.Errorf("OCSP: %v", err)
	}
	return der
}

// staple is the OCSP answer for id's certificate, to staple.
func (r *responder) staple(t testing.TB, id *identity.Identity) []byte {
	return r.ocspAnswer(t, id.Leaf().SerialNumber)
}

// leaf issues id from r's CA for 127.0.0.1 and localhost, naming the CRL
// and, when ocspURL is not empty, that OCSP responder.
func (r *responder) leaf(t testing.TB, id string, crl bool, ocspURL string) *identity.Identity {
	return issue(t, r.ca, id, func(x *x509.Certificate) {
		if crl {
			x.CRLDistributionPoints = []string{r.url + "/crl"}
		}
		if ocspURL != "" {
			x.OCSPServer = []string{ocspURL}
		}
	})
}
