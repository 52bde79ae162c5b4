package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/store"
)

// Federation is what the federation endpoints ask of the certificate
// authority. *ca.Authority provides it.
type Federation interface {
	AddFederation(ctx context.Context, by spiffeid.ID, r ca.FederationRequest) (store.Federation, error)
	ListFederations(ctx context.Context) ([]store.Federation, error)
	RemoveFederation(ctx context.Context, by spiffeid.ID, trustDomain string) error
	FederatedBundles(ctx context.Context) ([]store.TrustBundle, error)
	BundleChanges(ctx context.Context, trustDomain string) ([]store.BundleChange, error)
}

// routeFederation adds the bundle endpoint and the federation admin API
// when the Config has them.
func (s *Server) routeFederation() {
	if s.cfg.SPIFFEBundle != nil {
		s.route("GET /v1/federation/bundle", "federation_bundle", s.spiffeBundle)
	}
	if s.cfg.Federation == nil {
		return
	}
	s.route("POST /v1/federations", "federations_create", s.admin(s.addFederation))
	s.route("GET /v1/federations", "federations_list", s.admin(s.listFederations))
	s.route("GET /v1/federations/changes", "federations_changes", s.admin(s.federationChanges))
	s.route("DELETE /v1/federations/{td}", "federations_delete", s.admin(s.removeFederation))
}

// spiffeBundle serves this trust domain's bundle in the SPIFFE bundle
// format, to anyone: the bundle endpoint of both federation profiles
// (/v1/federation/bundle) and the agents' view (/v1/bundle/spiffe). One
// document: the roots (use x509-svid) with the stored sequence and refresh
// hint, and the JWT authority keys (use jwt-svid) when the CA signs
// JWT-SVIDs.
func (s *Server) spiffeBundle(w http.ResponseWriter, r *http.Request) (int, error) {
	var b *spiffebundle.Bundle
	if s.cfg.SPIFFEBundle != nil {
		parsed, err := spiffebundle.Parse(s.cfg.TrustDomain, s.cfg.SPIFFEBundle())
		if err != nil {
			return 0, fmt.Errorf("this trust domain's SPIFFE bundle: %w", err)
		}
		b = parsed
	} else {
		b = spiffebundle.New(s.cfg.TrustDomain)
		b.SetX509Authorities(s.cfg.Roots)
		b.SetRefreshHint(5 * time.Minute)
	}
	if s.cfg.JWT != nil {
		b.SetJWTAuthorities(s.cfg.JWT.JWTBundle().JWTAuthorities())
	}
	out, err := b.Marshal()
	if err != nil {
		return 0, err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(out)
	return http.StatusOK, nil
}

func (s *Server) addFederation(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.FederationRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	f, err := s.cfg.Federation.AddFederation(r.Context(), by, ca.FederationRequest{TrustDomain: req.TrustDomain, EndpointURL: req.EndpointURL,
		Profile: req.Profile, EndpointSPIFFEID: req.EndpointSPIFFEID, Bundle: []byte(req.Bundle), WebRootsPEM: req.WebRootsPEM})
	if err != nil {
		return 0, err
	}
	return ok(w, federationInfo(f, nil))
}

func federationInfo(f store.Federation, b *store.TrustBundle) api.Federation {
	out := api.Federation{TrustDomain: f.TrustDomain, EndpointURL: f.EndpointURL, Profile: f.Profile, EndpointSPIFFEID: f.EndpointSPIFFEID,
		CreatedAt: f.CreatedAt, CreatedBy: f.CreatedBy, LastError: f.LastError, Keys: []string{}}
	if !f.LastAttempt.IsZero() {
		t := f.LastAttempt
		out.LastAttempt = &t
	}
	if b != nil {
		t := b.UpdatedAt
		out.Sequence, out.Keys, out.BundleUpdatedAt = b.Sequence, b.Fingerprints, &t
	}
	return out
}

func (s *Server) listFederations(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	fs, err := s.cfg.Federation.ListFederations(r.Context())
	if err != nil {
		return 0, err
	}
	bs, err := s.cfg.Federation.FederatedBundles(r.Context())
	if err != nil {
		return 0, err
	}
	held := map[string]*store.TrustBundle{}
	for i := range bs {
		held[bs[i].TrustDomain] = &bs[i]
	}
	out := api.FederationList{Federations: []api.Federation{}}
	for _, f := range fs {
		out.Federations = append(out.Federations, federationInfo(f, held[f.TrustDomain]))
	}
	return ok(w, out)
}

func (s *Server) removeFederation(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	if err := s.cfg.Federation.RemoveFederation(r.Context(), by, r.PathValue("td")); err != nil {
		return 0, err
	}
	return ok(w, map[string]string{"removed": r.PathValue("td")})
}

func (s *Server) federationChanges(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	cs, err := s.cfg.Federation.BundleChanges(r.Context(), r.URL.Query().Get("trust_domain"))
	if err != nil {
		return 0, err
	}
	out := api.BundleChangeList{Changes: []api.BundleChange{}}
	for _, c := range cs {
		out.Changes = append(out.Changes, api.BundleChange{TrustDomain: c.TrustDomain, At: c.At, By: c.By, Action: c.Action,
			Sequence: c.Sequence, Added: nonNil(c.Added), Removed: nonNil(c.Removed)})
	}
	return ok(w, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// federatedPEM is the roots of each federated trust domain, and the JWT
// authorities (JWKS) of those that publish any, for /v1/bundle; nil
// without federation.
func (s *Server) federatedPEM(ctx context.Context) (roots, jwt map[string]string, err error) {
	if s.cfg.Federation == nil {
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	bs, err := s.cfg.Federation.FederatedBundles(ctx)
	if err != nil || len(bs) == 0 {
		return nil, nil, err
	}
	roots = map[string]string{}
	for _, b := range bs {
		roots[b.TrustDomain] = b.X509AuthoritiesPEM
		if b.JWTAuthorities != "" {
			if jwt == nil {
				jwt = map[string]string{}
			}
			jwt[b.TrustDomain] = b.JWTAuthorities
		}
	}
	return roots, jwt, nil
}
