// Package gospiffe_test proves that the CA federates with a bundle
// endpoint served by go-spiffe's own federation.Handler (the server side
// that SPIFFE implementations other than this one build on), in both
// profiles, over real TLS on loopback and through the admin API, as
// `mutual federation add` does. The opposite direction, go-spiffe's
// federation.FetchBundle reading this CA's endpoint in both profiles, is
// TestBundleEndpointServesGoSPIFFE in internal/caservice.
package gospiffe_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	gofed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	gotls "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	mfed "github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
)

const (
	partnerTD  = "partner.example"
	endpointID = "spiffe://partner.example/bundle/endpoint"
	// servedSequence is the sequence the partner's endpoint serves; the
	// bundle exchanged out of band has none, so holding it proves a fetch.
	servedSequence = 7
)

// partner is another trust domain whose bundle endpoint is go-spiffe's
// federation.Handler. The bundle it serves holds a second root beside the
// one exchanged out of band (a rotation under way), so that the CA holding
// both proves it read the endpoint.
type partner struct {
	ca          *testca.CA
	served      *spiffebundle.Bundle
	rotatedRoot *x509.Certificate
}

func newPartner(t *testing.T) *partner {
	t.Helper()
	ca, next := testca.New(t, testca.WithTrustDomain(partnerTD)), testca.New(t, testca.WithTrustDomain(partnerTD))
	b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(partnerTD), []*x509.Certificate{ca.Root, next.Root})
	b.SetSequenceNumber(servedSequence)
	b.SetRefreshHint(time.Minute)
	return &partner{ca: ca, served: b, rotatedRoot: next.Root}
}

// serve runs go-spiffe's handler over TLS with cfg and returns its URL.
func (p *partner) serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	h, err := gofed.NewHandler(p.served.TrustDomain(), p.served)
	if err != nil {
		t.Fatalf("go-spiffe federation.NewHandler: %v", err)
	}
	return testnet.ServeHTTPS(t, cfg, h) + "/bundle"
}

// svid is the endpoint's X509-SVID, as go-spiffe serves it.
func (p *partner) svid(t *testing.T, opts ...testca.LeafOption) *x509svid.SVID {
	t.Helper()
	id := p.ca.Leaf(t, endpointID, opts...)
	return &x509svid.SVID{ID: id.ID, Certificates: id.Chain, PrivateKey: id.Key}
}

// TestCAFetchesFromGoSPIFFEHandler: the CA, told of the partner's
// go-spiffe endpoint through the admin API, fetches its bundle in both
// profiles and holds exactly what was served (both roots, its sequence).
// An endpoint that fails the profile's authentication (another SPIFFE ID,
// a web certificate chaining to a root not given) leaves the bundle
// exchanged out of band and says why.
func TestCAFetchesFromGoSPIFFEHandler(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, p *partner) api.FederationRequest
		ok    bool
	}{
		{"https_spiffe", func(t *testing.T, p *partner) api.FederationRequest {
			url := p.serve(t, gotls.TLSServerConfig(p.svid(t)))
			return api.FederationRequest{EndpointURL: url, Profile: mfed.ProfileSPIFFE, EndpointSPIFFEID: endpointID, Bundle: string(pki.EncodeCertificates(p.ca.Root))}
		}, true},
		{"https_spiffe/another endpoint ID", func(t *testing.T, p *partner) api.FederationRequest {
			url := p.serve(t, gotls.TLSServerConfig(p.svid(t)))
			return api.FederationRequest{EndpointURL: url, Profile: mfed.ProfileSPIFFE, EndpointSPIFFEID: "spiffe://partner.example/not/the/endpoint", Bundle: string(pki.EncodeCertificates(p.ca.Root))}
		}, false},
		{"https_web", func(t *testing.T, p *partner) api.FederationRequest {
			url := p.serve(t, webServerConfig(p.svid(t, testca.IP("127.0.0.1"))))
			return api.FederationRequest{EndpointURL: url, Profile: mfed.ProfileWeb, WebRootsPEM: string(pki.EncodeCertificates(p.ca.Root)), Bundle: string(pki.EncodeCertificates(p.ca.Root))}
		}, true},
		{"https_web/another root", func(t *testing.T, p *partner) api.FederationRequest {
			url := p.serve(t, webServerConfig(p.svid(t, testca.IP("127.0.0.1"))))
			other := testca.New(t, testca.WithTrustDomain("elsewhere.example"))
			return api.FederationRequest{EndpointURL: url, Profile: mfed.ProfileWeb, WebRootsPEM: string(pki.EncodeCertificates(other.Root)), Bundle: string(pki.EncodeCertificates(p.ca.Root))}
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			e := testenv.StartCA(t, testenv.Options{})
			p := newPartner(t)
			req := c.setup(t, p)
			req.TrustDomain = partnerTD
			if _, err := e.Admin.AddFederation(ctx, req); err != nil {
				t.Fatalf("add the federation: %v", err)
			}
			f := waitAttempt(t, e)
			exchanged := []string{mfed.Fingerprint(p.ca.Root)}
			served := []string{mfed.Fingerprint(p.ca.Root), mfed.Fingerprint(p.rotatedRoot)}
			slices.Sort(served)
			keys := slices.Sorted(slices.Values(f.Keys))
			if c.ok {
				if f.LastError != "" || f.Sequence != servedSequence || !slices.Equal(keys, served) {
					t.Errorf("after the fetch the CA holds sequence %d, keys %v, error %q; want %d, %v and no error", f.Sequence, keys, f.LastError, servedSequence, served)
				}
				return
			}
			if f.LastError == "" || f.Sequence == servedSequence || !slices.Equal(keys, exchanged) {
				t.Errorf("an endpoint failing authentication left sequence %d, keys %v, error %q; want the exchanged bundle %v kept and an error", f.Sequence, keys, f.LastError, exchanged)
			}
		})
	}
}

// webServerConfig serves svid's certificate as a plain web server does:
// no client certificate asked for.
func webServerConfig(svid *x509svid.SVID) *tls.Config {
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
}

// waitAttempt waits for the CA's first fetch of the partner's bundle and
// returns the relationship as it stands then.
func waitAttempt(t *testing.T, e *testenv.CA) api.Federation {
	t.Helper()
	var f api.Federation
	testwait.EventuallyNil(t, func() error {
		l, err := e.Admin.ListFederations(context.Background())
		if err != nil {
			return err
		}
		if len(l.Federations) != 1 || l.Federations[0].LastAttempt == nil {
			return fmt.Errorf("relationships %+v: no fetch yet", l.Federations)
		}
		f = l.Federations[0]
		return nil
	}, "the CA's first fetch from the partner's endpoint")
	return f
}
