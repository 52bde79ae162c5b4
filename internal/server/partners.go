package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
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
	SetPartnerScope(ctx context.Context, by spiffeid.ID, name string, services, requests []string) (store.Partner, error)
	PartnerUsage(ctx context.Context, name string, limit int) (ca.PartnerUsage, error)
	ReportSightings(ctx context.Context, reporter spiffeid.ID, seen []api.Seen) ([]store.Partner, int, error)
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
	s.route("PUT /v1/partners/{name}/scope", "partners_scope", s.admin(s.setPartnerScope))
	reports := newReportLimiter(time.Now)
	s.route("POST /v1/proxy/partners", "proxy_partners", func(w http.ResponseWriter, r *http.Request) (int, error) {
		return s.proxyPartners(w, r, reports)
	})
}

func (s *Server) partnerInfo(p store.Partner, u ca.PartnerUsage) api.Partner {
	out := api.Partner{Name: p.Name, TrustDomain: p.TrustDomain, Roles: nonNil(p.Roles), EndsAt: p.EndsAt, CreatedAt: p.CreatedAt,
		CreatedBy: p.CreatedBy, EndedBy: p.EndedBy, IDPrefix: s.cfg.Partners.PartnerPrefix(p.Name), PartnerScope: partnerScope(p), Live: u.Live}
	if p.Ended() {
		t := p.EndedAt
		out.EndedAt = &t
	}
	if !u.SoonestExpiry.IsZero() {
		t := u.SoonestExpiry
		out.SoonestExpiry = &t
	}
	if len(u.Sightings) > 0 {
		last := sighting(u.Sightings[0])
		out.LastSeen = &last
	}
	return out
}

func partnerScope(p store.Partner) api.PartnerScope {
	return api.PartnerScope{Services: nonNil(p.Services), Requests: p.Requests}
}

func sighting(v store.Sighting) api.Sighting {
	return api.Sighting{SPIFFEID: v.SPIFFEID, Proxy: v.Reporter, At: v.At}
}

// partnerWithUsage is partnerInfo with what p holds and last used.
func (s *Server) partnerWithUsage(ctx context.Context, p store.Partner, sightings int) (api.Partner, ca.PartnerUsage, error) {
	u, err := s.cfg.Partners.PartnerUsage(ctx, p.Name, sightings)
	if err != nil {
		return api.Partner{}, u, err
	}
	return s.partnerInfo(p, u), u, nil
}

func (s *Server) createPartner(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.PartnerRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	p, err := s.cfg.Partners.CreatePartner(r.Context(), by, ca.PartnerRequest{Name: req.Name, TrustDomain: req.TrustDomain, Roles: req.Roles,
		Services: req.Services, Requests: req.Requests, EndsAt: req.EndsAt})
	if err != nil {
		return 0, err
	}
	return ok(w, s.partnerInfo(p, ca.PartnerUsage{}))
}

func (s *Server) listPartners(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	ps, err := s.cfg.Partners.ListPartners(r.Context())
	if err != nil {
		return 0, err
	}
	out := api.PartnerList{Partners: []api.Partner{}}
	for _, p := range ps {
		info, _, err := s.partnerWithUsage(r.Context(), p, 1)
		if err != nil {
			return 0, err
		}
		out.Partners = append(out.Partners, info)
	}
	return ok(w, out)
}

func (s *Server) showPartner(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	p, certs, err := s.cfg.Partners.GetPartner(r.Context(), r.PathValue("name"))
	if err != nil {
		return 0, err
	}
	info, u, err := s.partnerWithUsage(r.Context(), p, 1000)
	if err != nil {
		return 0, err
	}
	out := api.PartnerDetail{Partner: info, Certificates: []api.CertificateInfo{}, Sightings: []api.Sighting{}}
	for _, c := range certs {
		out.Certificates = append(out.Certificates, certificateInfo(c, false))
	}
	for _, v := range u.Sightings {
		out.Sightings = append(out.Sightings, sighting(v))
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

func (s *Server) setPartnerScope(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.PartnerScope
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	p, err := s.cfg.Partners.SetPartnerScope(r.Context(), by, r.PathValue("name"), req.Services, req.Requests)
	if err != nil {
		return 0, err
	}
	info, _, err := s.partnerWithUsage(r.Context(), p, 1)
	if err != nil {
		return 0, err
	}
	return ok(w, info)
}

// proxyPartners takes an inbound proxy's report of the partner identities
// it saw and answers the partnerships in force, which it enforces. The
// proxy authenticates with its own workload identity: the CA cannot tell
// which workloads run a proxy (a proxy's identity is an ordinary workload
// identity, from an agent, files or its own enrollment), so any workload
// may report, and what one reporter can cost is bounded instead: its
// reports are rate-limited here (reports), the store keeps its latest
// sightings only (store.MaxSightingsPerReporter) and the authority
// records only identities of partnerships.
func (s *Server) proxyPartners(w http.ResponseWriter, r *http.Request, reports *reportLimiter) (int, error) {
	p := peer(r)
	if p == nil {
		return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeWorkloadRequired,
			Msg: "partner reports need the proxy's client certificate (a workload identity of this trust domain)"}
	}
	id, err := s.cfg.Authority.CheckPeer(r.Context(), p)
	if err != nil {
		return 0, err
	}
	if wait := reports.admit(id.String()); wait > 0 {
		retry := int(wait.Round(time.Second) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(retry, 1)))
		msg := fmt.Sprintf("%s sent partner sighting reports too often: the limit is %d at once, then one every %s; retry in %s",
			id, reportBurst, reportEvery, wait.Round(time.Millisecond))
		s.metrics.refused.WithLabelValues(api.CodeSightingReportsTooFrequent).Inc()
		s.log.Info("request refused", "route", "proxy_partners", "remote", r.RemoteAddr, "status", http.StatusTooManyRequests,
			"code", api.CodeSightingReportsTooFrequent, "reason", msg)
		writeError(w, http.StatusTooManyRequests, api.CodeSightingReportsTooFrequent, msg)
		return http.StatusTooManyRequests, nil
	}
	var req api.SightingReport
	if err := api.DecodeLimit(r.Body, &req, api.MaxSightingReportBytes); err != nil {
		return 0, badRequest{err}
	}
	inForce, n, err := s.cfg.Partners.ReportSightings(r.Context(), id, req.Seen)
	if err != nil {
		return 0, err
	}
	out := api.PartnerFeed{Partners: []api.PartnerInForce{}, Recorded: n}
	for _, p := range inForce {
		out.Partners = append(out.Partners, api.PartnerInForce{Name: p.Name, TrustDomain: p.TrustDomain, PartnerScope: partnerScope(p)})
	}
	return ok(w, out)
}

// Sighting reports per reporter: reportBurst at once, then one every
// reportEvery. A proxy's feed reports every 5 seconds
// (partnerfeed.DefaultInterval), a fifth of what it may.
const (
	reportBurst = 10
	reportEvery = time.Second
)

// reportLimiter rate-limits sighting reports per reporter (on this
// replica): a generic cell rate algorithm, one "theoretical arrival time"
// per reporter. Reporters whose time has passed are forgotten, so the map
// holds only those that reported within the last reportBurst*reportEvery.
type reportLimiter struct {
	now func() time.Time

	mu        sync.Mutex
	tat       map[string]time.Time
	lastSweep time.Time
}

func newReportLimiter(now func() time.Time) *reportLimiter {
	return &reportLimiter{now: now, tat: map[string]time.Time{}}
}

// admit counts a report of reporter and returns zero, or how long the
// reporter must wait when it is over its limit (the report is then not
// counted).
func (l *reportLimiter) admit(reporter string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > reportBurst*reportEvery {
		for k, t := range l.tat {
			if !t.After(now) {
				delete(l.tat, k)
			}
		}
		l.lastSweep = now
	}
	tat := l.tat[reporter]
	if tat.Before(now) {
		tat = now
	}
	if ahead := tat.Sub(now); ahead > (reportBurst-1)*reportEvery {
		return ahead - (reportBurst-1)*reportEvery
	}
	l.tat[reporter] = tat.Add(reportEvery)
	return 0
}
