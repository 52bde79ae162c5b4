package ca

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/store"
)

// PartnerStore is what the partnership methods need from the CA's state;
// *store.DB provides it.
type PartnerStore interface {
	CreatePartner(ctx context.Context, p store.Partner) error
	GetPartner(ctx context.Context, name string) (store.Partner, error)
	ListPartners(ctx context.Context) ([]store.Partner, error)
	EndPartner(ctx context.Context, name, idPrefix, by string, reason int, at time.Time) ([]store.Revocation, error)
	CertificatesUnder(ctx context.Context, idPrefix string, limit int) ([]store.Certificate, error)
	SetPartnerScope(ctx context.Context, name string, services, requests []string) error
	RecordSightings(ctx context.Context, sightings []store.Sighting) error
	PartnerSightings(ctx context.Context, name string, limit int) ([]store.Sighting, error)
	HoldingsUnder(ctx context.Context, idPrefix string, at time.Time) (store.Holdings, error)
}

// reasonPartnershipEnded is the CRL reason of certificates revoked when
// their partnership ends (RFC 5280 cessationOfOperation).
const reasonPartnershipEnded = 5

var partnerName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// PartnerRequest asks for a partnership.
type PartnerRequest struct {
	// Name is the partner's name: its identities are spiffe://TD/partner/NAME/...
	Name string
	// TrustDomain is the partner's federated trust domain, if it has its
	// own PKI (added with AddFederation); ending the partnership drops it.
	TrustDomain string
	// Roles are carried by every certificate issued under the partnership.
	Roles []string
	// Services and Requests are its scope (see CheckScope).
	Services, Requests []string
	// EndsAt is when the partnership ends by itself (required, in the future).
	EndsAt time.Time
}

func (a *Authority) partnerStore() (PartnerStore, error) {
	ps, ok := a.Store.(PartnerStore)
	if !ok {
		return nil, newErr(KindUnavailable, api.CodeStoreUnavailable, nil, "this CA's store keeps no partnerships")
	}
	return ps, nil
}

// PartnerPrefix is the SPIFFE ID prefix of the partnership name's
// identities: spiffe://TD/partner/NAME/.
func (a *Authority) PartnerPrefix(name string) string {
	return a.Policy.TrustDomain.IDString() + "/partner/" + name + "/"
}

// CreatePartner validates and stores a partnership.
func (a *Authority) CreatePartner(ctx context.Context, by spiffeid.ID, r PartnerRequest) (store.Partner, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return store.Partner{}, err
	}
	now := a.now()
	switch {
	case !partnerName.MatchString(r.Name):
		return store.Partner{}, invalidRequest("partner name %q: lower-case letters, digits and inner dashes (acme, acme-eu)", r.Name)
	case !r.EndsAt.After(now):
		return store.Partner{}, invalidRequest("a partnership needs an end in the future (--until), not %s", r.EndsAt.Format(time.RFC3339))
	}
	if err := policy.CheckRoles(r.Roles); err != nil {
		return store.Partner{}, classify(err)
	}
	if err := a.CheckScope(r.Services, r.Requests); err != nil {
		return store.Partner{}, err
	}
	if r.TrustDomain != "" {
		td, err := spiffeid.TrustDomainFromString(r.TrustDomain)
		if err != nil || td == a.Policy.TrustDomain {
			return store.Partner{}, invalidRequest("--trust-domain %q: the partner's own trust domain (federated with `mutual federation add`)", r.TrustDomain)
		}
		r.TrustDomain = td.Name()
	}
	p := store.Partner{Name: r.Name, TrustDomain: r.TrustDomain, Roles: r.Roles, Services: r.Services, Requests: r.Requests, EndsAt: r.EndsAt.UTC(), CreatedAt: now, CreatedBy: by.String()}
	if err := ps.CreatePartner(ctx, p); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.Partner{}, newErr(KindInvalid, api.CodeBadRequest, err, "a partnership named %s exists already (ended ones keep their name, for the record)", r.Name)
		}
		return store.Partner{}, classify(err)
	}
	a.log().Info("partnership created", "partner", p.Name, "trust_domain", p.TrustDomain, "roles", strings.Join(p.Roles, ","),
		"services", strings.Join(p.Services, ","), "requests", strings.Join(p.Requests, ","), "ends_at", p.EndsAt, "by", p.CreatedBy)
	return p, nil
}

// ListPartners returns every partnership.
func (a *Authority) ListPartners(ctx context.Context) ([]store.Partner, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return nil, err
	}
	out, err := ps.ListPartners(ctx)
	return out, classify(err)
}

// GetPartner returns one partnership and the certificates issued under it
// (the newest 10,000).
func (a *Authority) GetPartner(ctx context.Context, name string) (store.Partner, []store.Certificate, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return store.Partner{}, nil, err
	}
	p, err := ps.GetPartner(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return p, nil, newErr(KindNotFound, api.CodeNotFound, err, "no partnership named %s (mutual partner list shows them)", name)
	}
	if err != nil {
		return p, nil, classify(err)
	}
	certs, err := ps.CertificatesUnder(ctx, a.PartnerPrefix(name), 10_000)
	if err != nil {
		return p, nil, classify(err)
	}
	return p, certs, nil
}

// PartnerTokenRequest asks for a join token for a partner's identity.
type PartnerTokenRequest struct {
	// Partner names the partnership; Path the identity under it
	// (spiffe://TD/partner/PARTNER/PATH).
	Partner, Path string
	// TTL is how long the token stays usable; it never outlives the partnership.
	TTL time.Duration
}

// CreatePartnerToken makes a join token for an identity of a partner
// without its own PKI: the certificate carries the partnership's roles and
// ends with it at the latest.
func (a *Authority) CreatePartnerToken(ctx context.Context, by spiffeid.ID, r PartnerTokenRequest) (string, store.Token, error) {
	end, err := a.partnerEnd(ctx, r.Partner)
	if err != nil {
		return "", store.Token{}, err
	}
	ps, _ := a.partnerStore()
	p, err := ps.GetPartner(ctx, r.Partner)
	if err != nil {
		return "", store.Token{}, classify(err)
	}
	path := strings.Trim(r.Path, "/")
	if path == "" {
		return "", store.Token{}, invalidRequest("--path: the identity under spiffe://%s/partner/%s/ to grant (svc, team/app)", a.Policy.TrustDomain.Name(), r.Partner)
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = policy.DefaultTokenTTL
	}
	ttl = min(ttl, end.Sub(a.now()))
	return a.CreateToken(ctx, by, TokenRequest{ID: a.PartnerPrefix(r.Partner) + path, TTL: ttl, Roles: p.Roles})
}

// partnerEnd returns when the partnership name ends, refusing one that
// does not exist or has ended.
func (a *Authority) partnerEnd(ctx context.Context, name string) (time.Time, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return time.Time{}, err
	}
	p, err := ps.GetPartner(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, newErr(KindForbidden, api.CodeEntryNotGranted, err, "no partnership named %s: partner identities are issued only under a partnership (mutual partner create)", name)
	}
	if err != nil {
		return time.Time{}, classify(err)
	}
	if p.Ended() || !p.EndsAt.After(a.now()) {
		return time.Time{}, newErr(KindForbidden, api.CodeEntryNotGranted, store.ErrPartnershipEnded, "the partnership %s has ended (%s): nothing more is issued under it", name, p.EndsAt.Format(time.RFC3339))
	}
	return p.EndsAt, nil
}

// partnerLifetime caps the lifetime of a partner identity's certificate at
// its partnership's end; other identities keep theirs.
func (a *Authority) partnerLifetime(ctx context.Context, id spiffeid.ID, lifetime time.Duration, now time.Time) (time.Duration, error) {
	name, ok := pki.PartnerName(id)
	if !ok {
		return lifetime, nil
	}
	end, err := a.partnerEnd(ctx, name)
	if err != nil {
		return 0, err
	}
	return min(lifetime, end.Sub(now)), nil
}

// EndPartner ends a partnership at once: every certificate issued under it
// is revoked (and pushed to subscribed proxies), none renews, its unused
// tokens are void and its federated bundle is dropped, in one transaction.
func (a *Authority) EndPartner(ctx context.Context, by spiffeid.ID, name string) ([]store.Revocation, error) {
	ps, err := a.partnerStore()
	if err != nil {
		return nil, err
	}
	revs, err := ps.EndPartner(ctx, name, a.PartnerPrefix(name), by.String(), reasonPartnershipEnded, a.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, newErr(KindNotFound, api.CodeNotFound, err, "no partnership named %s (mutual partner list shows them)", name)
	case errors.Is(err, store.ErrPartnershipEnded):
		return nil, newErr(KindInvalid, api.CodeBadRequest, err, "%v", err)
	case err != nil:
		return nil, classify(err)
	}
	a.log().Info("partnership ended", "partner", name, "revoked", len(revs), "by", by.String())
	for _, rev := range revs {
		a.log().Info("certificate revoked", "serial", rev.Serial, "spiffe_id", rev.SPIFFEID, "reason", pki.RevocationReasonName(reasonPartnershipEnded), "already", rev.AlreadyRevoked, "by", by.String())
		if !rev.AlreadyRevoked && a.OnRevoke != nil {
			a.OnRevoke(rev.Serial)
		}
	}
	if a.OnFederationChange != nil {
		a.OnFederationChange()
	}
	return revs, nil
}

// EndExpiredPartners ends every partnership whose end date has passed, as
// by.
func (a *Authority) EndExpiredPartners(ctx context.Context, by spiffeid.ID) error {
	ps, err := a.partnerStore()
	if err != nil {
		return err
	}
	all, err := ps.ListPartners(ctx)
	if err != nil {
		return err
	}
	now := a.now()
	for _, p := range all {
		if p.Ended() || p.EndsAt.After(now) {
			continue
		}
		if _, err := a.EndPartner(ctx, by, p.Name); err != nil && !errors.Is(err, store.ErrPartnershipEnded) {
			return err
		}
	}
	return nil
}
