// Package partnerfeed keeps an inbound proxy's view of the partnerships in
// force current, and tells the CA which partner identities the proxy saw.
//
// Every Interval the Feed POSTs the sightings gathered since its last
// report to the CA's /v1/proxy/partners, authenticated by the proxy's own
// workload identity, and installs the partnerships the CA answers (their
// names, trust domains and scopes), which the proxy then enforces, on open
// connections too. Until the first answer the Feed knows no partnership and
// says so (authz.PartnersUnknown): partner identities, and peers of other
// trust domains, reach nothing. When the CA cannot be reached the last
// answer stays in force; ending a partnership also revokes its
// certificates, which the revocation feed carries on its own.
//
//	f := &partnerfeed.Feed{CAURLs: urls, Source: src}
//	go f.Run(ctx)
//	proxy.InboundConfig{..., Partners: f}
package partnerfeed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
)

// DefaultInterval is how often a Feed reports when Interval is zero: the
// longest a narrowed scope takes to reach the proxy.
const DefaultInterval = 5 * time.Second

// Source is the proxy's own identity (to authenticate to the CA) and its
// trust bundle (to verify the CA).
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// unknown is what a Feed enforces before its first answer.
var unknown = authz.PartnersUnknown()

// Feed follows the CA's partnerships and reports sightings. The zero value
// needs CAURLs and Source; it starts nothing until Run or Sync.
type Feed struct {
	// CAURLs are the CA's https base URLs, tried in order.
	CAURLs []string
	Source Source
	// Interval is how often Run reports; zero means DefaultInterval.
	Interval time.Duration
	// Log may be nil.
	Log *slog.Logger
	// Now may be replaced by tests; nil means time.Now.
	Now func() time.Time
	// OnChange, if set, is called after a report that changed the
	// partnerships in force (tcp-mode proxies close the connections a
	// narrowed scope no longer covers).
	OnChange func()

	cur     atomic.Pointer[authz.Partners]
	last    []api.PartnerInForce // the answer cur was made from
	mu      sync.Mutex
	pending map[spiffeid.ID]time.Time
}

// Partners returns the partnerships in force (proxy.PartnerSource).
func (f *Feed) Partners() *authz.Partners {
	if p := f.cur.Load(); p != nil {
		return p
	}
	return unknown
}

// Seen records that the partner identity id was seen now, for the next
// report. At most api.MaxSightings distinct identities wait for a report;
// beyond that only those already waiting are updated.
func (f *Feed) Seen(id spiffeid.ID) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		f.pending = map[spiffeid.ID]time.Time{}
	}
	if _, ok := f.pending[id]; ok || len(f.pending) < api.MaxSightings {
		f.pending[id] = now
	}
}

func (f *Feed) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *Feed) log() *slog.Logger {
	if f.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Log
}

// Run reports and follows every Interval until ctx is done; a failed
// report is logged and retried at the next tick, the last answer staying
// in force.
func (f *Feed) Run(ctx context.Context) error {
	interval := f.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		err := f.Sync(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			f.log().Warn("partnerships: report to the CA failed; the last partnerships learnt stay in force", "error", err.Error())
		case err == nil && failing:
			f.log().Info("partnerships: reporting to the CA again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync sends the sightings gathered since the last report and installs the
// partnerships the CA answers, if they changed. Calls must not overlap. On
// failure the sightings wait for the next
// report and the partnerships in force stay.
func (f *Feed) Sync(ctx context.Context) error {
	f.mu.Lock()
	seen := f.pending
	f.pending = nil
	f.mu.Unlock()
	report := api.SightingReport{Seen: make([]api.Seen, 0, len(seen))}
	for id, at := range seen {
		report.Seen = append(report.Seen, api.Seen{SPIFFEID: id.String(), At: at.UTC()})
	}
	answer, err := f.report(ctx, report)
	if err != nil {
		f.restore(seen)
		return err
	}
	// Sync is not called concurrently (Run calls it in turn), so last
	// needs no lock.
	if f.cur.Load() != nil && slices.EqualFunc(f.last, answer.Partners, samePartner) {
		return nil
	}
	f.last = answer.Partners
	f.cur.Store(f.partners(answer.Partners))
	if f.OnChange != nil {
		f.OnChange()
	}
	return nil
}

func samePartner(a, b api.PartnerInForce) bool {
	return a.Name == b.Name && a.TrustDomain == b.TrustDomain && slices.Equal(a.Services, b.Services) && slices.Equal(a.Requests, b.Requests)
}

// restore puts back sightings a failed report did not deliver, keeping
// the later time of each.
func (f *Feed) restore(seen map[spiffeid.ID]time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		f.pending = map[spiffeid.ID]time.Time{}
	}
	for id, at := range seen {
		if cur, ok := f.pending[id]; (!ok && len(f.pending) < api.MaxSightings) || (ok && at.After(cur)) {
			f.pending[id] = at
		}
	}
}

func (f *Feed) report(ctx context.Context, report api.SightingReport) (*api.PartnerFeed, error) {
	if len(f.CAURLs) == 0 {
		return nil, errors.New("no CA address to learn the partnerships from: give --ca https://CA:PORT")
	}
	svid, err := f.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("the proxy's own certificate: %w", err)
	}
	td := svid.ID.TrustDomain()
	b, err := f.Source.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("the trust bundle of %s: %w", td.Name(), err)
	}
	cert := func() (*tls.Certificate, error) {
		s, err := f.Source.GetX509SVID()
		if err != nil {
			return nil, err
		}
		c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
		for _, x := range s.Certificates {
			c.Certificate = append(c.Certificate, x.Raw)
		}
		return c, nil
	}
	cl, err := client.New(f.CAURLs, b.X509Authorities(), nil, client.WithCertificateSource(cert), client.WithServerID(pki.ServerID(td)))
	if err != nil {
		return nil, err
	}
	defer cl.CloseIdleConnections()
	return cl.ReportPartners(ctx, report)
}

// partners turns the CA's answer into what the proxy enforces. A scope
// that does not parse reaches nothing (its partnership still counts, so
// that its trust domain's peers are not judged by policy alone).
func (f *Feed) partners(in []api.PartnerInForce) *authz.Partners {
	list := make([]authz.Partnership, 0, len(in))
	for _, p := range in {
		pp := authz.Partnership{Name: p.Name}
		if p.TrustDomain != "" {
			td, err := spiffeid.TrustDomainFromString(p.TrustDomain)
			if err != nil {
				f.log().Warn("partnerships: the CA named a bad trust domain; ignored", "partner", p.Name, "trust_domain", p.TrustDomain, "error", err.Error())
				continue
			}
			pp.TrustDomain = td
		}
		s, err := authz.ParseScope(p.Services, p.Requests)
		if err != nil {
			f.log().Warn("partnerships: a partnership's scope does not parse; it reaches nothing", "partner", p.Name, "error", err.Error())
		}
		pp.Scope = s
		list = append(list, pp)
	}
	return authz.NewPartners(list)
}
