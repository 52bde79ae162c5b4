package ca

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// recentRevocations is how many revocations a Summary lists.
const recentRevocations = 10

// Summary counts the live certificates by kind, by identity and by when
// they expire, and lists the latest revocations, in one pass over the
// store's live rows.
func (a *Authority) Summary(ctx context.Context) (*api.Summary, error) {
	now := a.now()
	s := &api.Summary{At: now, LiveByKind: map[string]int{}, ExpiringHourly: make([]int, 24), ExpiringDaily: make([]int, 7)}
	ids := map[string]*api.IdentitySummary{}
	err := a.Store.ForEachLive(ctx, now, func(l store.Live) error {
		id := ids[l.SPIFFEID]
		if id == nil {
			kind := pki.KindReserved
			if sid, err := spiffeid.FromString(l.SPIFFEID); err == nil {
				kind = pki.KindOf(sid)
			}
			id = &api.IdentitySummary{SPIFFEID: l.SPIFFEID, Kind: kind.String()}
			ids[l.SPIFFEID] = id
		}
		id.Certificates++
		if l.IssuedAt.After(id.NewestIssuedAt) {
			id.NewestSerial, id.NewestIssuedAt, id.NewestNotAfter = l.Serial, l.IssuedAt, l.NotAfter
		}
		s.LiveByKind[id.Kind]++
		left := l.NotAfter.Sub(now)
		if h := int(left / time.Hour); h < len(s.ExpiringHourly) {
			s.ExpiringHourly[h]++
		}
		if d := int(left / (24 * time.Hour)); d < len(s.ExpiringDaily) {
			s.ExpiringDaily[d]++
		}
		return nil
	})
	if err != nil {
		return nil, classify(err)
	}
	for _, id := range ids {
		s.Identities = append(s.Identities, *id)
	}
	slices.SortFunc(s.Identities, func(x, y api.IdentitySummary) int { return strings.Compare(x.SPIFFEID, y.SPIFFEID) })
	revs, err := a.Store.RecentRevocations(ctx, recentRevocations)
	if err != nil {
		return nil, classify(err)
	}
	for _, c := range revs {
		s.RecentRevocations = append(s.RecentRevocations, api.CertificateInfo{Serial: c.Serial, SPIFFEID: c.SPIFFEID,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, IssuedAt: c.IssuedAt, RequestedBy: c.RequestedBy,
			RevokedAt: &c.RevokedAt, RevocationReason: pki.RevocationReasonName(c.RevocationReason)})
	}
	return s, nil
}
