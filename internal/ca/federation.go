package ca

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// FederationStore is what the federation admin methods need from the
// CA's state; *store.DB provides it.
type FederationStore interface {
	CreateFederation(ctx context.Context, f store.Federation, initial *store.TrustBundle) error
	ListFederations(ctx context.Context) ([]store.Federation, error)
	DeleteFederation(ctx context.Context, trustDomain, by string, at time.Time) error
	ListBundles(ctx context.Context) ([]store.TrustBundle, error)
	ListBundleChanges(ctx context.Context, trustDomain string) ([]store.BundleChange, error)
}

// FederationRequest asks for a federation relationship with a foreign
// trust domain.
type FederationRequest struct {
	// TrustDomain is the foreign trust domain ("partner.example").
	TrustDomain string
	// EndpointURL is its bundle endpoint (https://...).
	EndpointURL string
	// Profile is federation.ProfileWeb or federation.ProfileSPIFFE.
	Profile string
	// EndpointSPIFFEID is the endpoint's SPIFFE ID (https_spiffe only).
	EndpointSPIFFEID string
	// Bundle is the foreign bundle exchanged out of band (SPIFFE bundle
	// JSON or PEM): required for https_spiffe, optional for https_web.
	Bundle []byte
	// WebRootsPEM, for https_web, are the roots the endpoint's certificate
	// must chain to; empty means the system's.
	WebRootsPEM string
}

func invalidRequest(format string, a ...any) *Error {
	return newErr(KindInvalid, api.CodeBadRequest, nil, format, a...)
}

// federationStore is a.Store's federation side.
func (a *Authority) federationStore() (FederationStore, error) {
	fs, ok := a.Store.(FederationStore)
	if !ok {
		return nil, newErr(KindUnavailable, api.CodeStoreUnavailable, nil, "this CA's store keeps no federation relationships")
	}
	return fs, nil
}

// validateFederation checks r and returns the relationship and its first
// bundle (nil when none was given).
func (a *Authority) validateFederation(r FederationRequest) (store.Federation, *store.TrustBundle, error) {
	td, err := spiffeid.TrustDomainFromString(r.TrustDomain)
	if err != nil || r.TrustDomain == "" {
		return store.Federation{}, nil, invalidRequest("trust domain %q: %v (a name such as partner.example)", r.TrustDomain, err)
	}
	if td == a.Policy.TrustDomain {
		return store.Federation{}, nil, invalidRequest("%s is this CA's own trust domain: federate with another one", td)
	}
	u, err := url.Parse(r.EndpointURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return store.Federation{}, nil, invalidRequest("bundle endpoint URL %q: want https://HOST[:PORT]/PATH", r.EndpointURL)
	}
	f := store.Federation{TrustDomain: td.Name(), EndpointURL: r.EndpointURL, Profile: r.Profile, WebRootsPEM: r.WebRootsPEM}
	if f.EndpointSPIFFEID, err = checkProfile(td, r); err != nil {
		return f, nil, err
	}
	if len(r.Bundle) == 0 {
		return f, nil, nil
	}
	b, err := federation.Parse(td, r.Bundle)
	if err != nil {
		return f, nil, invalidRequest("%v", err)
	}
	if err := federation.Check(a.Policy.TrustDomain, a.Roots, b); err != nil {
		return f, nil, invalidRequest("%v", err)
	}
	sb := federation.ToStore(b, "", a.now())
	return f, &sb, nil
}

// checkProfile checks what r's profile needs and returns the endpoint's
// SPIFFE ID (https_spiffe) or "".
func checkProfile(td spiffeid.TrustDomain, r FederationRequest) (string, error) {
	switch r.Profile {
	case federation.ProfileSPIFFE:
		id, err := spiffeid.FromString(r.EndpointSPIFFEID)
		if err != nil {
			return "", invalidRequest("endpoint SPIFFE ID %q: %v (https_spiffe needs the ID the endpoint presents, spiffe://%s/...)", r.EndpointSPIFFEID, err, td)
		}
		if id.TrustDomain() != td {
			return "", invalidRequest("endpoint SPIFFE ID %s is not in %s: the endpoint is authenticated by the bundle of the domain it serves", id, td)
		}
		if len(r.Bundle) == 0 {
			return "", invalidRequest("https_spiffe needs the bundle of %s exchanged once out of band (--bundle FILE) to authenticate its endpoint", td)
		}
		return id.String(), nil
	case federation.ProfileWeb:
		if r.EndpointSPIFFEID != "" {
			return "", invalidRequest("an endpoint SPIFFE ID is for the https_spiffe profile only; https_web authenticates the endpoint by its host name")
		}
		if r.WebRootsPEM != "" {
			if _, err := pki.ParseCertificates([]byte(r.WebRootsPEM)); err != nil {
				return "", invalidRequest("web roots: %v", err)
			}
		}
		return "", nil
	}
	return "", invalidRequest("profile %q: want https_web or https_spiffe", r.Profile)
}

// AddFederation validates and stores a relationship with a foreign trust
// domain, with its first bundle when given, recording who added it.
func (a *Authority) AddFederation(ctx context.Context, by spiffeid.ID, r FederationRequest) (store.Federation, error) {
	fs, err := a.federationStore()
	if err != nil {
		return store.Federation{}, err
	}
	f, initial, err := a.validateFederation(r)
	if err != nil {
		return store.Federation{}, err
	}
	f.CreatedAt, f.CreatedBy = a.now(), by.String()
	if initial != nil {
		initial.UpdatedAt, initial.UpdatedBy = f.CreatedAt, f.CreatedBy
	}
	if err := fs.CreateFederation(ctx, f, initial); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.Federation{}, newErr(KindInvalid, api.CodeBadRequest, err, "a federation with %s exists already: remove it first (mutual federation remove %s)", f.TrustDomain, f.TrustDomain)
		}
		return store.Federation{}, classify(err)
	}
	keys := ""
	if initial != nil {
		keys = strings.Join(initial.Fingerprints, ",")
	}
	a.log().Info("federation added", "trust_domain", f.TrustDomain, "endpoint", f.EndpointURL, "profile", f.Profile, "endpoint_spiffe_id", f.EndpointSPIFFEID, "keys", keys, "by", f.CreatedBy)
	if a.OnFederationChange != nil {
		a.OnFederationChange()
	}
	return f, nil
}

// ListFederations returns every relationship.
func (a *Authority) ListFederations(ctx context.Context) ([]store.Federation, error) {
	fs, err := a.federationStore()
	if err != nil {
		return nil, err
	}
	out, err := fs.ListFederations(ctx)
	return out, classify(err)
}

// RemoveFederation ends the relationship with a foreign trust domain and
// drops its bundle, recording who did it.
func (a *Authority) RemoveFederation(ctx context.Context, by spiffeid.ID, trustDomain string) error {
	fs, err := a.federationStore()
	if err != nil {
		return err
	}
	if err := fs.DeleteFederation(ctx, trustDomain, by.String(), a.now()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return newErr(KindNotFound, api.CodeNotFound, err, "no federation with %s (mutual federation list shows them)", trustDomain)
		}
		return classify(err)
	}
	a.log().Info("federation removed", "trust_domain", trustDomain, "by", by.String())
	if a.OnFederationChange != nil {
		a.OnFederationChange()
	}
	return nil
}

// FederatedBundles returns the bundles held for federated trust domains
// (the last good one of each), not this CA's own.
func (a *Authority) FederatedBundles(ctx context.Context) ([]store.TrustBundle, error) {
	fs, err := a.federationStore()
	if err != nil {
		return nil, err
	}
	all, err := fs.ListBundles(ctx)
	if err != nil {
		return nil, classify(err)
	}
	var out []store.TrustBundle
	for _, b := range all {
		if b.TrustDomain != a.Policy.TrustDomain.Name() {
			out = append(out, b)
		}
	}
	return out, nil
}

// BundleChanges returns the federation audit trail, for one trust domain
// or ("") all.
func (a *Authority) BundleChanges(ctx context.Context, trustDomain string) ([]store.BundleChange, error) {
	fs, err := a.federationStore()
	if err != nil {
		return nil, err
	}
	out, err := fs.ListBundleChanges(ctx, trustDomain)
	return out, classify(err)
}
