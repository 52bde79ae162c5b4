package caservice_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// issueLoad renews identities over and over from several goroutines, each
// answer counted: serials issued, 503s (with their messages), anything else.
type issueLoad struct {
	mu          sync.Mutex
	issued      map[string]bool
	unavailable []string
	other       []error
	stop        chan struct{}
	wg          sync.WaitGroup
}

func (l *issueLoad) counts() (issued, unavailable int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.issued), len(l.unavailable)
}

// startLoad returns an empty load (add starts its workers) and the function
// that stops it, also called at the end of the test.
func startLoad(t *testing.T) (*issueLoad, func()) {
	l := &issueLoad{issued: map[string]bool{}, stop: make(chan struct{})}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(l.stop)
			l.wg.Wait()
		}
	}
	t.Cleanup(stop)
	return l, stop
}

// add starts a worker renewing through cl.
func (l *issueLoad) add(cl *client.Client) {
	l.wg.Add(1)
	go l.worker(cl)
}

// renewCSR is a fresh key's certificate request.
func renewCSR() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	return string(pki.EncodeCSR(der)), err
}

// worker renews through cl, without the client's own retries, until stopped.
func (l *issueLoad) worker(cl *client.Client) {
	defer l.wg.Done()
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		csr, err := renewCSR()
		if err == nil {
			var resp *api.IssueResponse
			resp, err = cl.Renew(context.Background(), api.RenewRequest{CSR: csr})
			if err == nil {
				l.mu.Lock()
				l.issued[resp.Serial] = true
				l.mu.Unlock()
				continue
			}
		}
		var ae *client.APIError
		l.mu.Lock()
		if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable && ae.Code == api.CodeSignFailed {
			l.unavailable = append(l.unavailable, ae.Message)
		} else {
			l.other = append(l.other, err)
		}
		l.mu.Unlock()
	}
}

// TestTokenRemovedUnderLoad: a CA whose intermediate key is in a token
// issues under concurrent load; the token unplugged (its module answers
// CKR_DEVICE_REMOVED) turns issuance into 503s that say to retry, and
// issuance resumes by itself when it is back. Every certificate stored and
// logged is one a client received: nothing half-issued.
func TestTokenRemovedUnderLoad(t *testing.T) {
	tok := softhsmtest.NewRemovable(t, softhsmtest.New(t))
	dir := initInToken(t, pki.KeyRefs{Intermediate: tok.URI("intermediate")})
	svc, _ := run(t, caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0"})
	ctx := context.Background()
	before, err := svc.Store.ListCertificates(ctx, store.CertificateFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}

	l, stopLoad := startLoad(t)
	for i := range 4 {
		id := enroll(t, svc, fmt.Sprintf("spiffe://example.org/load/%d", i))
		l.add(renewingClient(t, svc, id, false))
	}

	testwait.Eventually(t, func() bool { n, _ := l.counts(); return n >= 20 }, "20 certificates issued through the token")
	tok.Remove(t)
	issuedAtRemoval, _ := l.counts()
	testwait.Eventually(t, func() bool { _, u := l.counts(); return u >= 20 }, "20 answers of 503 with the token removed")
	tok.Insert(t)
	_, unavailableAtReturn := l.counts()
	testwait.Eventually(t, func() bool { n, _ := l.counts(); return n >= issuedAtRemoval+40 }, "issuance to resume once the token is back")
	stopLoad()

	if len(l.other) > 0 {
		t.Fatalf("%d answers other than a certificate or a 503 sign_failed, first: %v", len(l.other), l.other[0])
	}
	if unavailableAtReturn == 0 {
		t.Fatal("no 503 while the token was removed")
	}
	for _, m := range l.unavailable {
		if !strings.Contains(m, "retry later") || !strings.Contains(m, "nothing was issued") {
			t.Fatalf("503 answer %q does not say that nothing was issued and to retry", m)
		}
	}
	// Stored and logged: the certificates of before, the enrollments and
	// exactly the renewals that were answered.
	after, err := svc.Store.ListCertificates(ctx, store.CertificateFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	renewed := 0
	for _, c := range after {
		if strings.HasPrefix(c.RequestedBy, "renew:") {
			renewed++
			if !l.issued[c.Serial] {
				t.Errorf("certificate %s is stored but was never answered", c.Serial)
			}
		}
	}
	if renewed != len(l.issued) || len(after) != len(before)+4+len(l.issued) {
		t.Fatalf("%d certificates stored (%d renewals), want %d before + 4 enrolled + %d answered", len(after), renewed, len(before), len(l.issued))
	}
	if n, err := svc.Store.LogSize(ctx); err != nil || n != int64(len(after)) {
		t.Fatalf("log of %d entries (%v), want one per stored certificate, %d", n, err, len(after))
	}
}
