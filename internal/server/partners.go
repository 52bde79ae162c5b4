package server

import (
	"context"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/store"
)

// Partners is what the partnership endpoints ask of the certificate
// authority. *ca.Authority provides it.
type Partners interface {
	CreatePartner(ctx context.Context, by spiffeid.ID, r ca.PartnerRequest) (store.Partner, error)
	ListPartners(ctx context.Context) ([]store.Partner, error)
	GetPartner(ctx context.Context, name string) (store.Partner, []store.Certificate, error)
	CreatePartnerToken(ctx context.Context, by spiffeid.ID, r ca.PartnerTokenRequest) (string, store.Token, error)
	EndPartner(ctx context.Context, by spiffeid.ID, name string) ([]store.Revocation, error)
	PartnerPrefix(name string) string
}

// routePartners adds the partnership admin API when the Config has it.
func (s *Server) routePartners() {
	if s.cfg.Partners == nil {
		return
	}
	s.route("POST /v1/partners", "partners_create", s.admin(s.createPartner))
	s.route("GET /v1/partners", "partners_list", s.admin(s.listPartners))
	s.route("GET /v1/partners/{name}", "partners_show", s.admin(s.showPartner))
	s.route("POST /v1/partners/{name}/tokens", "partners_token", s.admin(s.partnerToken))
	s.route("POST /v1/partners/{name}/end", "partners_end", s.admin(s.endPartner))
}

func (s *Server) partnerInfo(p store.Partner) api.Partner {
	out := api.Partner{Name: p.Name, TrustDomain: p.TrustDomain, Roles: nonNil(p.Roles), EndsAt: p.EndsAt, CreatedAt: p.CreatedAt,
		CreatedBy: p.CreatedBy, EndedBy: p.EndedBy, IDPrefix: s.cfg.Partners.PartnerPrefix(p.Name)}
	if p.Ended() {
		t := p.EndedAt
		out.EndedAt = &t
	}
	return out
}

func (s *Server) createPartner(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.PartnerRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	p, err := s.cfg.Partners.CreatePartner(r.Context(), by, ca.PartnerRequest{Name: req.Name, TrustDomain: req.TrustDomain, Roles: req.Roles, EndsAt: req.EndsAt})
	if err != nil {
		return 0, err
	}
	return ok(w, s.partnerInfo(p))
}

func (s *Server) listPartners(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	ps, err := s.cfg.Partners.ListPartners(r.Context())
	if err != nil {
		return 0, err
	}
	out := api.PartnerList{Partners: []api.Partner{}}
	for _, p := range ps {
		out.Partners = append(out.Partners, s.partnerInfo(p))
	}
	return ok(w, out)
}

func (s *Server) showPartner(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	p, certs, err := s.cfg.Partners.GetPartner(r.Context(), r.PathValue("name"))
	if err != nil {
		return 0, err
	}
	out := api.PartnerDetail{Partner: s.partnerInfo(p), Certificates: []api.CertificateInfo{}}
	for _, c := range certs {
		out.Certificates = append(out.Certificates, certificateInfo(c, false))
	}
	return ok(w, out)
}

func (s *Server) partnerToken(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.PartnerTokenRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	tok, rec, err := s.cfg.Partners.CreatePartnerToken(r.Context(), by, ca.PartnerTokenRequest{Partner: r.PathValue("name"), Path: req.Path, TTL: time.Duration(req.TTL)})
	if err != nil {
		return 0, err
	}
	s.metrics.tokens.Inc()
	return ok(w, api.TokenResponse{Token: tok, ID: rec.ID, SPIFFEID: rec.SPIFFEID, ExpiresAt: rec.ExpiresAt})
}

func (s *Server) endPartner(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	revs, err := s.cfg.Partners.EndPartner(r.Context(), by, r.PathValue("name"))
	if err != nil {
		return 0, err
	}
	return ok(w, revokeResponse(revs, s.metrics))
}
