package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffetls "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// Store is what federation needs from the CA's state; *store.DB provides it.
type Store interface {
	ListFederations(ctx context.Context) ([]store.Federation, error)
	GetBundle(ctx context.Context, trustDomain string) (store.TrustBundle, error)
	SetBundle(ctx context.Context, b store.TrustBundle) (bool, error)
	RecordFederationAttempt(ctx context.Context, trustDomain string, at time.Time, errMsg string) error
}

// Clock tells the time and waits; tests step a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Refresh bounds: a hint below MinRefresh or above MaxRefresh is clamped;
// after a failed fetch the next comes within RetryAfterFailure.
const (
	MinRefresh        = 10 * time.Second
	MaxRefresh        = time.Hour
	RetryAfterFailure = 30 * time.Second
	// relist is how often the relationships are read again, so that one
	// added through another replica is picked up.
	relist = time.Minute
)

// Refresher fetches the bundle of every federated trust domain on its
// refresh hint and stores it when it passes Check and is newer than the one
// held; a failed fetch or a refused bundle leaves the last good one.
type Refresher struct {
	// Store holds the relationships and bundles.
	Store Store
	// TrustDomain and Roots are this CA's, which no foreign bundle may claim.
	TrustDomain spiffeid.TrustDomain
	Roots       []*x509.Certificate
	// Clock defaults to the system's.
	Clock Clock
	// Log receives one line per change and per failure; nil discards.
	Log *slog.Logger

	wake chan struct{}
	next map[string]time.Time
}

func (r *Refresher) clock() Clock {
	if r.Clock == nil {
		return realClock{}
	}
	return r.Clock
}

func (r *Refresher) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Refresher) wakeCh() chan struct{} {
	if r.wake == nil {
		r.wake = make(chan struct{}, 1)
	}
	return r.wake
}

// Init prepares r; call it before Run and Wake are used concurrently.
func (r *Refresher) Init() { r.wakeCh() }

// Wake makes Run read the relationships and fetch what is new now (after
// a relationship was added or removed).
func (r *Refresher) Wake() {
	select {
	case r.wakeCh() <- struct{}{}:
	default:
	}
}

// Run refreshes until ctx is done.
func (r *Refresher) Run(ctx context.Context) error {
	wake := r.wakeCh()
	r.next = map[string]time.Time{}
	for {
		next := r.clock().Now().Add(r.pass(ctx))
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-r.clock().After(next.Sub(r.clock().Now())):
		}
	}
}

// pass fetches every bundle that is due and returns how long to wait.
func (r *Refresher) pass(ctx context.Context) time.Duration {
	feds, err := r.Store.ListFederations(ctx)
	if err != nil {
		r.log().Warn("federation: cannot read the relationships; the bundles held stay", "error", err.Error())
		return RetryAfterFailure
	}
	wait := relist
	seen := map[string]bool{}
	for _, f := range feds {
		seen[f.TrustDomain] = true
		now := r.clock().Now()
		due, ok := r.next[f.TrustDomain]
		if !ok || !due.After(now) {
			due = now.Add(r.Refresh(ctx, f))
			r.next[f.TrustDomain] = due
		}
		wait = min(wait, due.Sub(now))
	}
	for td := range r.next {
		if !seen[td] {
			delete(r.next, td)
		}
	}
	return max(wait, 0)
}

// Refresh fetches f's bundle once, stores it if it is good and new, records
// the attempt, and returns when to fetch again.
func (r *Refresher) Refresh(ctx context.Context, f store.Federation) time.Duration {
	now := r.clock().Now()
	next, err := r.refresh(ctx, f, now)
	msg := ""
	if err != nil {
		msg = err.Error()
		r.log().Warn("federation: the bundle of "+f.TrustDomain+" was not updated; the last good one stays", "trust_domain", f.TrustDomain, "endpoint", f.EndpointURL, "error", msg)
		next = min(next, RetryAfterFailure)
	}
	if err := r.Store.RecordFederationAttempt(ctx, f.TrustDomain, now, msg); err != nil {
		r.log().Warn("federation: cannot record the fetch", "trust_domain", f.TrustDomain, "error", err.Error())
	}
	return next
}

func (r *Refresher) refresh(ctx context.Context, f store.Federation, now time.Time) (time.Duration, error) {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return RetryAfterFailure, err
	}
	var held *spiffebundle.Bundle
	switch sb, err := r.Store.GetBundle(ctx, f.TrustDomain); {
	case err == nil:
		if held, err = FromStore(sb); err != nil {
			return RetryAfterFailure, err
		}
	case !errors.Is(err, store.ErrNotFound):
		return RetryAfterFailure, err
	}
	interval := DefaultRefreshHint
	if held != nil {
		if h, ok := held.RefreshHint(); ok {
			interval = min(max(h, MinRefresh), MaxRefresh)
		}
	}
	b, err := r.Fetch(ctx, f, held)
	if err != nil {
		return interval, err
	}
	if err := Check(r.TrustDomain, r.Roots, b); err != nil {
		return interval, err
	}
	if _, ok := b.SequenceNumber(); !ok {
		return interval, fmt.Errorf("%w: the bundle of %s has no spiffe_sequence", ErrRefused, td)
	}
	sb := ToStore(b, "federation:"+f.EndpointURL, now)
	changed, err := r.Store.SetBundle(ctx, sb)
	if err != nil {
		return interval, err
	}
	if changed {
		r.log().Info("federation: bundle updated", "trust_domain", f.TrustDomain, "sequence", sb.Sequence, "keys", strings.Join(sb.Fingerprints, ","), "by", sb.UpdatedBy)
	}
	if h, ok := b.RefreshHint(); ok {
		interval = min(max(h, MinRefresh), MaxRefresh)
	}
	return interval, nil
}

// MaxBundleSize bounds a foreign bundle document.
const MaxBundleSize = 1 << 20

// Fetch gets f's bundle from its endpoint, authenticated by f's profile as
// go-spiffe's federation.FetchBundle does (https_spiffe: the endpoint's
// SPIFFE ID under held, the bundle of the federated domain; https_web: f's
// web roots or the system's for the URL's host), within 30 seconds and
// MaxBundleSize bytes, refusing an answer other than 200.
func (r *Refresher) Fetch(ctx context.Context, f store.Federation, held *spiffebundle.Bundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(f.TrustDomain)
	if err != nil {
		return nil, err
	}
	tc, err := clientTLS(f, held)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.EndpointURL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("federation with %s: endpoint URL: %w", td, err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the bundle of %s from %s (%s): %w", td, f.EndpointURL, f.Profile, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the bundle of %s from %s: HTTP %s", td, f.EndpointURL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch the bundle of %s from %s: %w", td, f.EndpointURL, err)
	}
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("%w: the bundle of %s from %s is larger than %d bytes", ErrRefused, td, f.EndpointURL, MaxBundleSize)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("fetch the bundle of %s from %s: %w", td, f.EndpointURL, err)
	}
	return b, nil
}

// clientTLS authenticates f's endpoint by its profile, as go-spiffe's
// federation.WithSPIFFEAuth and WithWebPKIRoots do.
func clientTLS(f store.Federation, held *spiffebundle.Bundle) (*tls.Config, error) {
	switch f.Profile {
	case ProfileSPIFFE:
		id, err := spiffeid.FromString(f.EndpointSPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("federation with %s: endpoint SPIFFE ID: %w", f.TrustDomain, err)
		}
		if held == nil {
			return nil, fmt.Errorf("federation with %s: no bundle held to authenticate %s by; add the relationship again with --bundle FILE", f.TrustDomain, id)
		}
		return spiffetls.TLSClientConfig(x509bundle.FromX509Authorities(held.TrustDomain(), held.X509Authorities()), spiffetls.AuthorizeID(id)), nil
	case ProfileWeb:
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.WebRootsPEM != "" {
			roots, err := pki.ParseCertificates([]byte(f.WebRootsPEM))
			if err != nil {
				return nil, fmt.Errorf("federation with %s: web roots: %w", f.TrustDomain, err)
			}
			tc.RootCAs = pki.CertPool(roots)
		}
		return tc, nil
	}
	return nil, fmt.Errorf("federation with %s: unknown profile %q (https_web or https_spiffe)", f.TrustDomain, f.Profile)
}

// EnsureLocal stores this trust domain's bundle (roots) and returns it with
// its sequence number: the one held when the roots are unchanged, the next
// one when they changed (replicas agree: the store orders them).
func EnsureLocal(ctx context.Context, st Store, td spiffeid.TrustDomain, roots []*x509.Certificate, now time.Time) (*spiffebundle.Bundle, error) {
	seq := int64(1)
	held, err := st.GetBundle(ctx, td.Name())
	switch {
	case err == nil:
		seq = held.Sequence
		b := Local(td, roots, seq)
		if !sameKeys(held.Fingerprints, ToStore(b, "", now).Fingerprints) {
			seq++
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("this trust domain's bundle: %w", err)
	}
	b := Local(td, roots, seq)
	if _, err := st.SetBundle(ctx, ToStore(b, "ca", now)); err != nil && !errors.Is(err, store.ErrStaleBundle) {
		return nil, fmt.Errorf("this trust domain's bundle: %w", err)
	}
	return b, nil
}

func sameKeys(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	in := map[string]bool{}
	for _, x := range a {
		in[x] = true
	}
	for _, x := range b {
		if !in[x] {
			return false
		}
	}
	return true
}
