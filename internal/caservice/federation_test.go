package caservice_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	mfed "github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// waitFor polls cond until it holds (testwait's deadline); state says
// what was seen last.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testwait.EventuallyNil(t, func() error {
		if ok, state := cond(); !ok {
			return errors.New(state)
		}
		return nil
	}, what)
}

func pemOf(c *x509.Certificate) string { return string(pki.EncodeCertificates(c)) }

// TestBundleEndpointServesGoSPIFFE: go-spiffe's federation.FetchBundle
// (the code SPIRE uses) reads the CA's bundle over real TLS in both
// profiles: https_spiffe (the endpoint authenticated by its SPIFFE ID under
// the bundle exchanged out of band) and https_web (its certificate chains
// to a root the client trusts, for its host name).
func TestBundleEndpointServesGoSPIFFE(t *testing.T) {
	c := testca.New(t, testca.WithTrustDomain("a.example"))
	svc, _ := run(t, options(c))
	url := svc.URL + mfed.EndpointPath
	ctx := context.Background()
	check := func(name string, b *spiffebundle.Bundle) {
		t.Helper()
		if auths := b.X509Authorities(); len(auths) != 1 || !auths[0].Equal(c.Root) {
			t.Errorf("%s: authorities %v, want the CA's root", name, auths)
		}
		if seq, ok := b.SequenceNumber(); !ok || seq < 1 {
			t.Errorf("%s: spiffe_sequence = %d, %v; want one from 1", name, seq, ok)
		}
		if hint, ok := b.RefreshHint(); !ok || hint != mfed.DefaultRefreshHint {
			t.Errorf("%s: spiffe_refresh_hint = %v, %v; want %v", name, hint, ok, mfed.DefaultRefreshHint)
		}
	}
	local := x509bundle.FromX509Authorities(c.TrustDomain, []*x509.Certificate{c.Root})
	b, err := federation.FetchBundle(ctx, c.TrustDomain, url, federation.WithSPIFFEAuth(local, pki.ServerID(c.TrustDomain)))
	if err != nil {
		t.Fatalf("https_spiffe: %v", err)
	}
	check("https_spiffe", b)
	b, err = federation.FetchBundle(ctx, c.TrustDomain, url, federation.WithWebPKIRoots(pki.CertPool([]*x509.Certificate{c.Root})))
	if err != nil {
		t.Fatalf("https_web: %v", err)
	}
	check("https_web", b)

	// The wrong endpoint ID, or a root the endpoint does not chain to, is
	// refused: the profiles authenticate.
	other := testca.New(t, testca.WithTrustDomain("b.example"))
	if _, err := federation.FetchBundle(ctx, c.TrustDomain, url, federation.WithSPIFFEAuth(local, spiffeid.RequireFromString("spiffe://a.example/not-the-server"))); err == nil {
		t.Error("https_spiffe accepted an endpoint with another SPIFFE ID")
	}
	if _, err := federation.FetchBundle(ctx, c.TrustDomain, url, federation.WithWebPKIRoots(pki.CertPool([]*x509.Certificate{other.Root}))); err == nil {
		t.Error("https_web accepted an endpoint that does not chain to the given root")
	}
}

// TestTwoCAsFederate: two mutual CAs, each its own trust domain, federate
// with each other (a fetches b's bundle over https_spiffe, b fetches a's
// over https_web), record who changed what, hand the foreign bundle to
// agents through /v1/bundle, and keep the last good bundle when the other
// endpoint is down.
func TestTwoCAsFederate(t *testing.T) {
	ctx := context.Background()
	ca, cb := testca.New(t, testca.WithTrustDomain("a.example")), testca.New(t, testca.WithTrustDomain("b.example"))
	clockA, clockB := mfed.NewManualClock(time.Now()), mfed.NewManualClock(time.Now())
	oa, ob := options(ca), options(cb)
	oa.FederationClock, ob.FederationClock = clockA, clockB
	svcA, _ := run(t, oa)
	svcB, stopB := run(t, ob)
	adminA, adminB := adminClient(t, svcA), adminClient(t, svcB)

	if _, err := adminA.AddFederation(ctx, api.FederationRequest{TrustDomain: "b.example", EndpointURL: svcB.URL + mfed.EndpointPath,
		Profile: mfed.ProfileSPIFFE, EndpointSPIFFEID: pki.ServerID(cb.TrustDomain).String(), Bundle: pemOf(cb.Root)}); err != nil {
		t.Fatalf("a federates with b: %v", err)
	}
	if _, err := adminB.AddFederation(ctx, api.FederationRequest{TrustDomain: "a.example", EndpointURL: svcA.URL + mfed.EndpointPath,
		Profile: mfed.ProfileWeb, WebRootsPEM: pemOf(ca.Root)}); err != nil {
		t.Fatalf("b federates with a: %v", err)
	}
	fetched := func(cl *client.Client, td string, root *x509.Certificate) func() (bool, string) {
		return func() (bool, string) {
			l, err := cl.ListFederations(ctx)
			if err != nil || len(l.Federations) != 1 {
				return false, "list: " + errString(err)
			}
			f := l.Federations[0]
			// The fetched bundle holds the X.509 root and the other CA's
			// JWT keys (listed as jwt:KID:SHA256).
			var x509Keys, jwtKeys []string
			for _, k := range f.Keys {
				if strings.HasPrefix(k, "jwt:") {
					jwtKeys = append(jwtKeys, k)
				} else {
					x509Keys = append(x509Keys, k)
				}
			}
			ok := f.TrustDomain == td && f.LastAttempt != nil && f.LastError == "" && f.Sequence >= 1 &&
				slices.Equal(x509Keys, []string{mfed.Fingerprint(root)}) && len(jwtKeys) >= 1
			js, _ := json.Marshal(f)
			return ok, string(js)
		}
	}
	waitFor(t, "a holding b's fetched bundle", fetched(adminA, "b.example", cb.Root))
	waitFor(t, "b holding a's fetched bundle", fetched(adminB, "a.example", ca.Root))

	// Who changed what, and when: the admin added the relationship with
	// b's root; the fetch moved it to the endpoint's sequence.
	ch, err := adminA.BundleChanges(ctx, "b.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.Changes) != 2 || ch.Changes[0].Action != store.ActionFederationAdded || ch.Changes[0].By != "spiffe://a.example/admin/operator" ||
		!slices.Equal(ch.Changes[0].Added, []string{mfed.Fingerprint(cb.Root)}) ||
		ch.Changes[1].Action != store.ActionBundleUpdated || ch.Changes[1].By != "federation:"+svcB.URL+mfed.EndpointPath || ch.Changes[1].Sequence < 1 {
		js, _ := json.MarshalIndent(ch, "", " ")
		t.Errorf("a's changes for b.example:\n%s", js)
	}

	// Agents get the federated bundle with the CA's own.
	bundle, err := adminA.Bundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := bundle.FederatedBundles["b.example"]; got != pemOf(cb.Root) {
		t.Errorf("/v1/bundle federated_bundles[b.example] = %q, want b's root", got)
	}

	// b goes down: a's next refresh fails, says so, and keeps b's bundle.
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	// Time moves on, a refresh hint per look, until a's next fetch fails.
	waitFor(t, "a noting that b's endpoint is down", func() (bool, string) {
		clockA.Advance(mfed.DefaultRefreshHint)
		l, err := adminA.ListFederations(ctx)
		if err != nil || len(l.Federations) != 1 {
			return false, errString(err)
		}
		f := l.Federations[0]
		js, _ := json.Marshal(f)
		return f.LastError != "", string(js)
	})
	if b, err := svcA.Store.GetBundle(ctx, "b.example"); err != nil || b.X509AuthoritiesPEM != pemOf(cb.Root) {
		t.Errorf("after a failed fetch a holds %+v (%v), want b's last good bundle", b, err)
	}

	// Removing the relationship drops the bundle, recorded with its keys.
	if err := adminA.RemoveFederation(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	if bundle, err := adminA.Bundle(ctx); err != nil || len(bundle.FederatedBundles) != 0 {
		t.Errorf("after remove, /v1/bundle federated_bundles = %v (%v), want none", bundle.FederatedBundles, err)
	}
	ch, err = adminA.BundleChanges(ctx, "b.example")
	if err != nil || len(ch.Changes) != 3 || ch.Changes[2].Action != store.ActionFederationRemoved ||
		!slices.Contains(ch.Changes[2].Removed, mfed.Fingerprint(cb.Root)) || len(ch.Changes[2].Removed) != 2 { // the root and b's JWT key
		t.Errorf("a's changes for b.example after remove: %+v (%v)", ch, err)
	}
	if err := adminA.RemoveFederation(ctx, "b.example"); err == nil {
		t.Error("removing a federation twice succeeded")
	}
}

// TestAddFederationRefusesBadInput: the admin API refuses a relationship
// with the CA's own trust domain, without the bundle https_spiffe needs,
// or whose bundle claims this CA's root.
func TestAddFederationRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	ca := testca.New(t, testca.WithTrustDomain("a.example"))
	svc, _ := run(t, options(ca))
	admin := adminClient(t, svc)
	other := testca.New(t, testca.WithTrustDomain("b.example"))
	for name, req := range map[string]api.FederationRequest{
		"own trust domain":      {TrustDomain: "a.example", EndpointURL: "https://127.0.0.1:1/b", Profile: mfed.ProfileWeb},
		"http endpoint":         {TrustDomain: "b.example", EndpointURL: "http://127.0.0.1:1/b", Profile: mfed.ProfileWeb},
		"unknown profile":       {TrustDomain: "b.example", EndpointURL: "https://127.0.0.1:1/b", Profile: "https"},
		"spiffe without bundle": {TrustDomain: "b.example", EndpointURL: "https://127.0.0.1:1/b", Profile: mfed.ProfileSPIFFE, EndpointSPIFFEID: "spiffe://b.example/x"},
		"endpoint ID elsewhere": {TrustDomain: "b.example", EndpointURL: "https://127.0.0.1:1/b", Profile: mfed.ProfileSPIFFE, EndpointSPIFFEID: "spiffe://c.example/x", Bundle: pemOf(other.Root)},
		"bundle with our root":  {TrustDomain: "b.example", EndpointURL: "https://127.0.0.1:1/b", Profile: mfed.ProfileWeb, Bundle: pemOf(ca.Root)},
		"malformed bundle":      {TrustDomain: "b.example", EndpointURL: "https://127.0.0.1:1/b", Profile: mfed.ProfileWeb, Bundle: "{not json"},
	} {
		if _, err := admin.AddFederation(ctx, req); err == nil {
			t.Errorf("%s: accepted", name)
		} else if ae := (*client.APIError)(nil); !errors.As(err, &ae) || ae.Status != 400 {
			t.Errorf("%s: %v, want a 400", name, err)
		}
	}
	if l, err := admin.ListFederations(ctx); err != nil || len(l.Federations) != 0 {
		t.Errorf("after refusals: %+v (%v), want no relationship", l, err)
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
