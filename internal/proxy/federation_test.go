package proxy_test

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testnet"
)

// TestFederatedPeerNeedsARuleNamingIt: with a federated trust domain's
// bundle trusted, its peer is verified against that bundle and admitted
// only by a rule naming its ID; neither the local domain's patterns nor a
// role its own CA wrote into its certificate admit it. A local peer with
// the same role still is.
func TestFederatedPeerNeedsARuleNamingIt(t *testing.T) {
	w := newWorld(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	bundles := w.bundleWith(partner)
	foreign := leafWithRoles(t, partner, "spiffe://partner.example/ns/prod/web", "auditor")
	local := leafWithRoles(t, w.ca, auditorID, "auditor")
	policy := func(yaml string) proxy.PolicySource {
		p, err := authz.Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		return proxy.StaticPolicy{P: p}
	}
	for _, c := range []struct {
		name, policy    string
		foreignAdmitted bool
	}{
		{"local patterns only", "rules:\n  - ids: [\"spiffe://example.org/**\"]\n  - ids: [\"" + auditorID + "\"]\n", false},
		{"a role the partner's CA wrote", "rules:\n  - roles: [auditor]\n", false},
		{"a rule naming the foreign ID", "rules:\n  - ids: [\"spiffe://partner.example/ns/prod/*\"]\n  - roles: [auditor]\n", true},
	} {
		for _, protocol := range []proxy.Protocol{proxy.TCP, proxy.HTTP} {
			t.Run(fmt.Sprintf("%s/%s", c.name, protocol), func(t *testing.T) {
				target := testnet.Echo(t)
				if protocol == proxy.HTTP {
					target = httpBackend(t)
				}
				r := runInbound(t, w, proxy.InboundConfig{SVID: w.src, Bundle: bundles, Target: target, Protocol: protocol, Policy: policy(c.policy)})
				admitted := func(id *identity.Identity) bool {
					if protocol == proxy.TCP {
						_, err := testnet.RoundTrip(r.addr, w.clientTLS(id), "hello")
						return err == nil
					}
					res := doRequest(httpClient(t, w.clientTLS(id)), "GET", "https://"+r.addr+"/x", nil)
					return res.err == nil && res.code == 200
				}
				if got := admitted(foreign); got != c.foreignAdmitted {
					t.Errorf("partner.example peer admitted = %v, want %v", got, c.foreignAdmitted)
				}
				if !admitted(local) {
					t.Error("the local peer holding the auditor role was refused")
				}
			})
		}
	}
}

// TestOutboundToAFederatedService: a local client reaches a service of a
// federated trust domain through the outbound proxy once the proxy holds
// that domain's bundle (and the partner's inbound proxy admits it by ID);
// without the bundle it is refused.
func TestOutboundToAFederatedService(t *testing.T) {
	w := newWorld(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	const partnerSvc = "spiffe://partner.example/billing/api"
	dir := filepath.Join(t.TempDir(), "partner-proxy")
	if err := partner.Leaf(t, partnerSvc, testca.IP("127.0.0.1")).Save(dir); err != nil {
		t.Fatal(err)
	}
	psrc, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	both := w.bundleWith(partner)
	pol, err := authz.FromPatterns([]string{outID})
	if err != nil {
		t.Fatal(err)
	}
	in := runInbound(t, w, proxy.InboundConfig{SVID: psrc, Bundle: both, Target: testnet.Echo(t), Policy: proxy.StaticPolicy{P: pol}})

	for _, c := range []struct {
		name   string
		bundle x509bundle.Source
		want   bool
	}{{"with the partner's bundle", both, true}, {"with the local bundle only", nil, false}} {
		t.Run(c.name, func(t *testing.T) {
			out := outboundWith(t, w, proxy.OutboundConfig{Target: in.addr, Bundle: c.bundle, Expect: patterns(t, partnerSvc)}, nil)
			got, err := testnet.RoundTrip(out.addr, nil, "hello partner")
			if ok := err == nil && got == "hello partner"; ok != c.want {
				t.Errorf("round trip = %q, %v; want success %v", got, err, c.want)
			}
		})
	}
}

// rogueLeaf is a certificate for id signed straight by ca's root, which
// carries no name constraint: what a CA that does not restrain itself (a
// careless or hostile partner) can mint for any trust domain.
func rogueLeaf(t testing.TB, ca *testca.CA, id string) *identity.Identity {
	t.Helper()
	sid := spiffeid.RequireFromString(id)
	key := testca.NewKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), URIs: []*url.URL{sid.URL()},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, key.Public(), ca.Key(t, pki.RootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Identity{ID: sid, Chain: []*x509.Certificate{leaf}, Key: key, Roots: []*x509.Certificate{ca.Root}}
}

// TestIdentityDirFederatedBundles attacks the trust boundary of a proxy
// started from an identity directory holding federated bundles
// (federated/TD.pem): each peer is verified against the bundle of its own
// ID's trust domain only. A partner's CA minting an ID of this trust domain
// is refused, and so is this domain's CA minting a partner ID (pooled
// roots would accept both); a federated trust domain no rule names is
// refused; and once a rewrite of the directory drops the partner's bundle,
// the partner is refused at the next handshake, without a restart.
func TestIdentityDirFederatedBundles(t *testing.T) {
	w := newWorld(t)
	partner := testca.New(t, testca.WithTrustDomain("partner.example"))
	other := testca.New(t, testca.WithTrustDomain("other.example"))
	dir := filepath.Join(t.TempDir(), "fed-proxy")
	own := w.ca.Leaf(t, proxyID, testca.IP("127.0.0.1"), testca.DNS("localhost"))
	withFed := *own
	withFed.Federated = map[spiffeid.TrustDomain][]*x509.Certificate{
		partner.TrustDomain: {partner.Root}, other.TrustDomain: {other.Root},
	}
	if err := identity.WriteDir(dir, &withFed, identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := authz.FromPatterns([]string{"spiffe://partner.example/ns/prod/*", "spiffe://example.org/**"})
	if err != nil {
		t.Fatal(err)
	}
	r := runInbound(t, w, proxy.InboundConfig{SVID: src, Bundle: src, Target: testnet.Echo(t), Policy: proxy.StaticPolicy{P: pol}})
	admitted := func(id *identity.Identity) error {
		_, err := testnet.RoundTrip(r.addr, w.clientTLS(id), "hello")
		return err
	}
	partnerPeer := partner.Leaf(t, "spiffe://partner.example/ns/prod/web")
	localPeer := w.ca.Leaf(t, "spiffe://example.org/ns/prod/web")
	for _, c := range []struct {
		name string
		peer *identity.Identity
		want bool
	}{
		{"a partner peer named by a rule", partnerPeer, true},
		{"a local peer", localPeer, true},
		{"the partner's root minting an ID of this trust domain", rogueLeaf(t, partner, "spiffe://example.org/ns/prod/web"), false},
		{"this domain's root minting a partner ID", rogueLeaf(t, w.ca, "spiffe://partner.example/ns/prod/web"), false},
		{"a federated trust domain no rule names", other.Leaf(t, "spiffe://other.example/ns/prod/web"), false},
	} {
		if err := admitted(c.peer); (err == nil) != c.want {
			t.Errorf("%s: admitted = %v (%v), want %v", c.name, err == nil, err, c.want)
		}
	}

	// The partner's bundle leaves the directory: the next handshake fails.
	if err := identity.WriteDir(dir, own, identity.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := admitted(partnerPeer); err == nil {
		t.Error("the partner peer is still admitted after its bundle left the identity directory")
	}
	if err := admitted(localPeer); err != nil {
		t.Errorf("the local peer is refused after the rewrite: %v", err)
	}
}
