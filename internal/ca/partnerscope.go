package ca

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// CheckScope accepts a partnership's scope: at least one service, every
// service a pattern of this trust domain (the services behind its inbound
// proxies), every request rule "METHODS PATH".
func (a *Authority) CheckScope(services, requests []string) error {
	s, err := authz.ParseScope(services, requests)
	if err != nil {
		return invalidRequest("--allow-service/--allow: %v", err)
	}
	for _, p := range s.Services {
		if p.TrustDomain() != a.Policy.TrustDomain {
			return invalidRequest("--allow-service %s: services are this trust domain's (spiffe://%s/...): a partner reaches them through their inbound proxies", p, a.Policy.TrustDomain.Name())
		}
	}
	return nil
}

// SetPartnerScope replaces what the partnership name may reach. Proxies
// apply it at their next report (every few seconds), to open connections
// too; certificates need no reissue.
func (a *Authority) SetPartnerScope(ctx context.Context, by spiffeid.ID, name string, services, requests []string) (store.Partner, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return store.Partner{}, err
	}
	if err := a.CheckScope(services, requests); err != nil {
		return store.Partner{}, err
	}
	err = ps.SetPartnerScope(ctx, name, services, requests)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Partner{}, newErr(KindNotFound, api.CodeNotFound, err, "no partnership named %s (mutual partner list shows them)", name)
	case errors.Is(err, store.ErrPartnershipEnded):
		return store.Partner{}, newErr(KindInvalid, api.CodeBadRequest, err, "%v: an ended partnership keeps the scope it ended with", err)
	case err != nil:
		return store.Partner{}, classify(err)
	}
	a.log().Info("partnership scope set", "partner", name, "services", strings.Join(services, ","), "requests", strings.Join(requests, ","), "by", by.String())
	p, err := ps.GetPartner(ctx, name)
	return p, classify(err)
}

// PartnerUsage is what a partnership holds (its live certificates) and
// used (where and when proxies last saw its identities).
type PartnerUsage struct {
	store.Holdings
	// Sightings are the latest per identity and proxy, newest first.
	Sightings []store.Sighting
}

// PartnerUsage returns what the partnership name holds and used, with at
// most limit sightings.
func (a *Authority) PartnerUsage(ctx context.Context, name string, limit int) (PartnerUsage, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return PartnerUsage{}, err
	}
	var u PartnerUsage
	if u.Holdings, err = ps.HoldingsUnder(ctx, a.PartnerPrefix(name), a.now()); err != nil {
		return u, classify(err)
	}
	u.Sightings, err = ps.PartnerSightings(ctx, name, limit)
	return u, classify(err)
}

// ReportSightings records what the proxy reporter saw and returns the
// partnerships in force, for it to enforce. The reporter must hold a
// workload identity of this trust domain (CheckPeer verified it); it can
// only speak for itself (sightings are recorded under its ID), only of
// identities of partnerships that exist (other IDs are dropped), and not
// of the future (a time ahead of the CA's clock counts as now). It returns
// the partnerships in force and how many sightings it recorded.
func (a *Authority) ReportSightings(ctx context.Context, reporter spiffeid.ID, seen []api.Seen) ([]store.Partner, int, error) {
	if reporter.TrustDomain() != a.Policy.TrustDomain || pki.KindOf(reporter) != pki.KindWorkload {
		return nil, 0, newErr(KindForbidden, api.CodeWorkloadRequired, nil, "%s may not report partner sightings: only a proxy holding a workload identity of %s may", reporter, a.Policy.TrustDomain.Name())
	}
	if len(seen) > api.MaxSightings {
		return nil, 0, invalidRequest("a report of %d sightings is above the limit of %d: report more often", len(seen), api.MaxSightings)
	}
	ps, err := a.partnerStore()
	if err != nil {
		return nil, 0, err
	}
	all, err := ps.ListPartners(ctx)
	if err != nil {
		return nil, 0, classify(err)
	}
	now := a.now()
	var inForce []store.Partner
	for _, p := range all {
		if !p.Ended() && p.EndsAt.After(now) {
			inForce = append(inForce, p)
		}
	}
	rec := a.sightingsOfPartners(reporter, seen, all, now)
	if err := ps.RecordSightings(ctx, rec); err != nil {
		return nil, 0, classify(err)
	}
	return inForce, len(rec), nil
}

// sightingsOfPartners keeps the sightings, among seen, of identities of the
// partnerships all (ended ones too: their last sighting is history worth
// keeping), recorded under reporter and never after now.
func (a *Authority) sightingsOfPartners(reporter spiffeid.ID, seen []api.Seen, all []store.Partner, now time.Time) []store.Sighting {
	known, byTD := map[string]bool{}, map[string]string{}
	for _, p := range all {
		known[p.Name] = true
		if p.TrustDomain != "" {
			byTD[p.TrustDomain] = p.Name
		}
	}
	var rec []store.Sighting
	for _, s := range seen {
		id, err := spiffeid.FromString(s.SPIFFEID)
		if err != nil {
			continue
		}
		name, ok := pki.PartnerName(id)
		if id.TrustDomain() != a.Policy.TrustDomain {
			name, ok = byTD[id.TrustDomain().Name()]
		}
		if ok && known[name] {
			rec = append(rec, store.Sighting{Partner: name, SPIFFEID: id.String(), Reporter: reporter.String(), At: minTime(s.At.UTC(), now)})
		}
	}
	return rec
}

func minTime(a, b time.Time) time.Time {
	if a.After(b) {
		return b
	}
	return a
}
