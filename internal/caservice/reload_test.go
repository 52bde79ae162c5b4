package caservice_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/watch"
)

// renewingClient is a client of svc authenticating with id; leafOnly
// sends the leaf without its intermediate, as many TLS stacks do.
func renewingClient(t *testing.T, svc *caservice.Service, id *identity.Identity, leafOnly bool) *client.Client {
	t.Helper()
	tc := id.TLSCertificate()
	if leafOnly {
		tc.Certificate = tc.Certificate[:1]
	}
	cl, err := client.New([]string{svc.URL}, id.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	cl.Retries = -1
	t.Cleanup(cl.CloseIdleConnections)
	return cl
}

// renewedBy renews through cl and returns the intermediate of the answer.
func renewedBy(t *testing.T, cl *client.Client) *x509.Certificate {
	t.Helper()
	csr, err := renewCSR()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Renew(context.Background(), api.RenewRequest{CSR: csr})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil || len(chain) < 2 {
		t.Fatalf("renewal chain of %d certificates: %v", len(chain), err)
	}
	return chain[len(chain)-1]
}

// servedIntermediate is the intermediate that signs the TLS certificate
// svc serves now.
func servedIntermediate(t *testing.T, svc *caservice.Service, roots []*x509.Certificate) (*x509.Certificate, error) {
	u, err := url.Parse(svc.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pki.CertPool(roots), ServerName: u.Hostname()})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	chain := conn.ConnectionState().PeerCertificates
	return chain[len(chain)-1], nil
}

// TestRotationReloadUnderLoad: an intermediate rotation while the service
// issues under concurrent load (with clients sending their leaf alone),
// then a reload (what SIGHUP does): no request fails, the next issuance is
// under the new intermediate, a client holding only a leaf of the retired
// intermediate still renews, the old intermediate's CRL and OCSP answer,
// the new one's CRL is served, and the service's own TLS certificate moves.
func TestRotationReloadUnderLoad(t *testing.T) {
	dir := testca.New(t).Dir
	o := caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		ReloadInterval: time.Hour} // only the explicit reload below
	svc, _ := run(t, o)
	ctx := context.Background()

	l, stopLoad := startLoad(t)
	var old *identity.Identity
	for i := range 4 {
		old = enroll(t, svc, fmt.Sprintf("spiffe://example.org/load/%d", i))
		l.add(renewingClient(t, svc, old, i%2 == 0))
	}
	oldInter := old.Chain[1]
	leafOnly := renewingClient(t, svc, old, true)

	testwait.Eventually(t, func() bool { n, _ := l.counts(); return n >= 20 }, "20 certificates issued before the rotation")
	rot, err := caservice.RotateIntermediate(ctx, caservice.RotateOptions{Dir: dir, Passphrase: []byte(testca.Passphrase), Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := svc.Reload(ctx)
	if err != nil || !changed {
		t.Fatalf("reload after the rotation: changed %v, %v", changed, err)
	}
	if changed, err := svc.Reload(ctx); err != nil || changed {
		t.Fatalf("second reload with nothing new: changed %v, %v", changed, err)
	}
	after := enroll(t, svc, "spiffe://example.org/after")
	if !after.Chain[len(after.Chain)-1].Equal(rot.New) {
		t.Fatalf("issued after the reload by %s, want the new intermediate", after.Chain[len(after.Chain)-1].Subject.CommonName)
	}
	atReload, _ := l.counts()
	testwait.Eventually(t, func() bool { n, _ := l.counts(); return n >= atReload+20 }, "20 more certificates issued after the reload")
	stopLoad()
	if _, u := l.counts(); len(l.other) > 0 || u > 0 {
		t.Fatalf("%d requests failed and %d answered 503 across the rotation, first: %v", len(l.other), u, l.other)
	}

	if got := renewedBy(t, leafOnly); !got.Equal(rot.New) {
		t.Fatalf("a leaf-only client of the retired intermediate renewed under %s, want the new intermediate", got.Subject.CommonName)
	}
	verifyChain(t, dir, old)
	verifyChain(t, dir, after)
	crlOf(t, svc, old.Leaf(), oldInter)
	crlOf(t, svc, after.Leaf(), rot.New)
	if s := ocspStatus(t, svc, old.Leaf(), oldInter); s != ocsp.Good {
		t.Errorf("OCSP about a certificate of the retired intermediate: status %d, want good", s)
	}
	if s := ocspStatus(t, svc, after.Leaf(), rot.New); s != ocsp.Good {
		t.Errorf("OCSP about a certificate of the new intermediate: status %d, want good", s)
	}
	served, err := servedIntermediate(t, svc, old.Roots)
	if err != nil {
		t.Fatal(err)
	}
	if !served.Equal(rot.New) {
		t.Fatalf("the service serves a TLS certificate of %s, want one of the new intermediate", served.Subject.CommonName)
	}
}

// TestRotationReloadsByItself: with no signal, the service notices the
// rotated CA directory within its poll interval; a trigger (SIGHUP) makes
// it look at once.
func TestRotationReloadsByItself(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		fire     bool
	}{{"poll", 20 * time.Millisecond, false}, {"sighup", time.Hour, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := testca.New(t).Dir
			hup := &watch.Trigger{}
			svc, _ := run(t, caservice.Options{Dir: dir, Passphrase: []byte(testca.Passphrase), Listen: "127.0.0.1:0",
				ReloadInterval: tc.interval, Reload: hup})
			rot, err := caservice.RotateIntermediate(context.Background(), caservice.RotateOptions{Dir: dir, Passphrase: []byte(testca.Passphrase), Iterations: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if tc.fire {
				hup.Fire()
			}
			roots, err := pki.ReadCertificates(dir + "/" + pki.BundleFile)
			if err != nil {
				t.Fatal(err)
			}
			testwait.EventuallyNil(t, func() error {
				served, err := servedIntermediate(t, svc, roots)
				if err == nil && !served.Equal(rot.New) {
					err = fmt.Errorf("still served under %s", served.Subject.CommonName)
				}
				return err
			}, "the service to serve a TLS certificate of the new intermediate")
			id := enroll(t, svc, "spiffe://example.org/after")
			if !id.Chain[len(id.Chain)-1].Equal(rot.New) {
				t.Fatal("issued under the old intermediate after the reload")
			}
		})
	}
}
