package proxy_test

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
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
	bundles := x509bundle.NewSet(
		x509bundle.FromX509Authorities(w.ca.TrustDomain, []*x509.Certificate{w.ca.Root}),
		x509bundle.FromX509Authorities(partner.TrustDomain, []*x509.Certificate{partner.Root}),
	)
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
	both := x509bundle.NewSet(
		x509bundle.FromX509Authorities(w.ca.TrustDomain, []*x509.Certificate{w.ca.Root}),
		x509bundle.FromX509Authorities(partner.TrustDomain, []*x509.Certificate{partner.Root}),
	)
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
