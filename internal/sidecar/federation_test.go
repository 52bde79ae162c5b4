package sidecar_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestInboundIdentityDirFederated: `mutual proxy --identity-dir` whose
// directory holds a federated bundle (federated/partner.example.pem)
// admits the partner's peer that --allow names, and refuses it once the
// directory is rewritten without that bundle, without a restart.
func TestInboundIdentityDirFederated(t *testing.T) {
	ca := testca.New(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	dir := t.TempDir()
	own := ca.Leaf(t, apiID, testca.DNS("localhost"))
	withFed := *own
	withFed.Federated = map[spiffeid.TrustDomain][]*x509.Certificate{partner.TrustDomain: {partner.Root}}
	if err := identity.WriteDir(dir, &withFed, identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, logs := inboundConfig(t, dir, "spiffe://partner.example/ns/prod/*")
	cfg.PollInterval = 50 * time.Millisecond
	listen := cfg.Listen
	runSidecar(t, cfg, logs)

	peer := partner.Leaf(t, "spiffe://partner.example/ns/prod/web")
	call := func() error {
		_, err := testnet.RoundTrip(listen, &tls.Config{RootCAs: pki.CertPool([]*x509.Certificate{ca.Root}), ServerName: "localhost",
			Certificates: []tls.Certificate{peer.TLSCertificate()}}, "ping")
		return err
	}
	if err := call(); err != nil {
		t.Fatalf("the partner's peer is refused while its bundle is in the directory: %v", err)
	}
	if err := identity.WriteDir(dir, own, identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, func() bool { return call() != nil }, "the proxy refusing the partner once its bundle left the directory")
}
