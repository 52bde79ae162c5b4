package revocation

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/watch"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// Source is the watcher's own identity (for mTLS to the CA) and trust
// bundle.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// Watcher keeps a set of revoked serials current: it follows the CA's push
// feed and, while the feed is down, refetches the CRL. Proxies and agents
// ask it about peers (Check) and hear of each revocation (OnRevoke).
//
// The watcher fails closed: Check refuses every peer while it cannot know
// the revocation status, that is while the feed is down and it holds no
// CRL whose nextUpdate is still ahead (at start, before the first CRL or
// feed connection, and once the last CRL has passed its nextUpdate without
// a fresh one). It accepts a CRL only when signed by the issuing CA, not
// past its nextUpdate, and not numbered below one it has seen (a replayed
// older CRL).
type Watcher struct {
	// CAURLs are the CA's https base URLs, tried in order.
	CAURLs []string
	// CRLURL, if set, is a CRL distribution point (as a certificate names
	// it) fetched when no CA URL serves the CRL. A watcher with a CRLURL
	// and no CAURLs follows that CRL alone, every CRLInterval.
	CRLURL string
	Source Source
	// CRLInterval is how often the CRL is fetched while the feed is down;
	// default 30s.
	CRLInterval time.Duration
	// FeedValidity is how long what the feed said stays good after the
	// feed was last heard from, as a CRL fetched at that moment would;
	// default CRLValidity.
	FeedValidity time.Duration
	// OnRevoke, if set, is called for each newly learnt revocation.
	OnRevoke func(Event)
	Log      *slog.Logger
	// Now may be replaced by tests; nil means time.Now. It dates what the
	// watcher knows (CRL validity, feed contact); its timers stay real.
	Now func() time.Time
	// crlTicks, if set, replaces the timer of a watcher that follows a CRL
	// alone (tests send ticks instead of waiting).
	crlTicks <-chan time.Time

	mu      sync.RWMutex
	revoked map[string]Event
	seq     int64
	feedUp  bool
	lastCRL time.Time
	// crlNumber is the highest CRL number accepted; knownUntil is when
	// the status learnt so far stops being current.
	crlNumber  *big.Int
	knownUntil time.Time
	initOnce   sync.Once
}

func (w *Watcher) init() {
	w.initOnce.Do(func() {
		w.revoked = map[string]Event{}
		if w.CRLInterval <= 0 {
			w.CRLInterval = 30 * time.Second
		}
		if w.FeedValidity <= 0 {
			w.FeedValidity = CRLValidity
		}
		if w.Log == nil {
			w.Log = slog.New(slog.DiscardHandler)
		}
	})
}

func (w *Watcher) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Revoked reports whether the serial (lower-case hex) is revoked.
func (w *Watcher) Revoked(serial string) bool {
	w.init()
	w.mu.RLock()
	defer w.mu.RUnlock()
	_, ok := w.revoked[serial]
	return ok
}

// Check is a tlsconfig peer check: it refuses a revoked certificate of
// the watcher's own CA, and every certificate while the revocation status
// is not current.
//
// The CA's push feed and its CRLs (one per intermediate, retired ones too,
// each listing every revoked serial of the CA) name certificates by serial
// alone, so a serial means something only for a certificate our CA issued:
// Check looks it up only for a chain of ours (see ours). A certificate of
// another trust domain's CA (a federated partner) is not judged by our
// list, so a partner serial equal to one of our revoked serials is not
// refused for it.
func (w *Watcher) Check(id spiffeid.ID, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	if w.ours(id, chain) {
		serial := pki.FormatSerial(chain[0].SerialNumber)
		if w.Revoked(serial) {
			return &tlsconfig.PeerError{Reason: tlsconfig.ReasonRevoked, ID: id, Cert: chain[0], Err: fmt.Errorf("certificate %s is revoked", serial)}
		}
	}
	if err := w.Current(); err != nil {
		return &tlsconfig.PeerError{Reason: tlsconfig.ReasonRevocationUnknown, ID: id, Cert: chain[0], Err: err}
	}
	return nil
}

// ours reports whether chain was issued by the watcher's own CA, whose
// feed and CRLs judge it: its SPIFFE ID is in the watcher's trust domain
// (our intermediates are name-constrained to it), or a certificate of the
// chain is, or was signed by the key of, one of our roots or of the
// watcher's own intermediates. Any intermediate under our roots counts,
// the current one and retired ones alike. It fails closed: when the
// watcher cannot tell its trust domain or roots, every chain is ours.
func (w *Watcher) ours(id spiffeid.ID, chain []*x509.Certificate) bool {
	if w.Source == nil {
		return true
	}
	svid, err := w.Source.GetX509SVID()
	if err != nil || svid == nil {
		return true
	}
	td := svid.ID.TrustDomain()
	if id.TrustDomain() == td {
		return true
	}
	b, err := w.Source.GetX509BundleForTrustDomain(td)
	if err != nil {
		return true
	}
	authorities := append(b.X509Authorities(), svid.Certificates[min(1, len(svid.Certificates)):]...)
	for _, c := range chain {
		for _, a := range authorities {
			if sameKey(c, a) || (len(a.SubjectKeyId) > 0 && bytes.Equal(c.AuthorityKeyId, a.SubjectKeyId)) {
				return true
			}
		}
	}
	return false
}

// sameKey reports whether c and a are the same CA: same subject and key
// (a re-issued or cross-signed copy counts).
func sameKey(c, a *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, a.RawSubject) && bytes.Equal(c.RawSubjectPublicKeyInfo, a.RawSubjectPublicKeyInfo)
}

// ErrStale is why Current fails: neither the feed nor a CRL vouches for
// the revocation status now.
var ErrStale = errors.New("revocation status unknown")

// Current reports whether the watcher knows the revocation status now: the
// feed is connected, or the last feed contact or CRL is still within its
// validity. Otherwise it returns an error wrapping ErrStale that says since
// when.
func (w *Watcher) Current() error {
	w.init()
	w.mu.RLock()
	up, until := w.feedUp, w.knownUntil
	w.mu.RUnlock()
	if up || w.now().Before(until) {
		return nil
	}
	if until.IsZero() {
		return fmt.Errorf("%w: no CRL fetched and no feed connected yet: is the CA reachable?", ErrStale)
	}
	return fmt.Errorf("%w: the feed is down and the last CRL expired at %s with no fresh one since: is the CA reachable?", ErrStale, until.UTC().Format(time.RFC3339))
}

// extend moves knownUntil forward to t; the caller holds w.mu.
func (w *Watcher) extend(t time.Time) {
	if t.After(w.knownUntil) {
		w.knownUntil = t
	}
}

// CRLNumber returns the number of the newest CRL accepted, nil before the
// first.
func (w *Watcher) CRLNumber() *big.Int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.crlNumber == nil {
		return nil
	}
	return new(big.Int).Set(w.crlNumber)
}

// FeedUp reports whether the push feed is connected.
func (w *Watcher) FeedUp() bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.feedUp
}

func (w *Watcher) add(e Event) {
	w.mu.Lock()
	_, known := w.revoked[e.Serial]
	if !known {
		w.revoked[e.Serial] = e
	}
	if e.Seq > w.seq {
		w.seq = e.Seq
	}
	// Forget what has expired anyway.
	if len(w.revoked)%256 == 0 {
		now := w.now()
		for s, old := range w.revoked {
			if !old.NotAfter.IsZero() && now.After(old.NotAfter) {
				delete(w.revoked, s)
			}
		}
	}
	w.mu.Unlock()
	if !known && w.OnRevoke != nil {
		w.OnRevoke(e)
	}
}

// client builds an HTTPS client presenting the watcher's identity and
// accepting only the CA service (spiffe://TD/mutual/server).
func (w *Watcher) client(caURL string) (*http.Client, error) { return caClient(w.Source, caURL) }

// caClient builds an HTTP client for caURL: over https it presents src's
// identity and accepts only the CA service (spiffe://TD/mutual/server).
func caClient(src Source, caURL string) (*http.Client, error) {
	u, err := url.Parse(caURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "http" {
		return &http.Client{Timeout: 15 * time.Second}, nil
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, err
	}
	server, _ := spiffeid.FromSegments(svid.ID.TrustDomain(), "mutual", "server")
	cfg, err := tlsconfig.ClientConfig(src, src, tlsconfig.AuthorizeID(server), u.Hostname(), tlsconfig.WithTLS12())
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: false, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second}}, nil
}

// Run follows the feed until ctx is done, fetching the CRL at start and
// whenever the feed has been down for CRLInterval.
func (w *Watcher) Run(ctx context.Context) error {
	w.init()
	if len(w.CAURLs) == 0 && w.CRLURL == "" {
		return errors.New("revocation watcher: no CA address and no CRL distribution point")
	}
	if err := w.fetchCRL(ctx); err != nil {
		w.Log.Warn("revocation: cannot fetch the CRL; will retry", "error", err.Error())
	}
	if len(w.CAURLs) == 0 {
		return w.followCRL(ctx)
	}
	failures := 0
	for ctx.Err() == nil {
		healthy := false
		for _, base := range w.CAURLs {
			connected, err := w.follow(ctx, base)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				w.Log.Warn("revocation feed down; falling back to the CRL", "ca", base, "error", err.Error())
			}
			if connected {
				healthy = true
				break
			}
		}
		if healthy {
			// A stream that worked and broke: reconnect at once.
			failures = 0
			continue
		}
		failures++
		// While the feed is down, the CRL keeps the set current.
		if time.Since(w.lastCRLTime()) >= w.CRLInterval {
			if err := w.fetchCRL(ctx); err != nil {
				w.Log.Warn("revocation: cannot fetch the CRL either", "error", err.Error())
			}
		}
		wait := min(time.Second<<min(failures, 4), w.CRLInterval)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	return nil
}

// followCRL refetches the CRL every CRLInterval until ctx is done: the
// watcher's only source when it knows no CA address.
func (w *Watcher) followCRL(ctx context.Context) error {
	return watch.Loop{
		Reload: func(ctx context.Context) (bool, error) { return true, w.fetchCRL(ctx) },
		OnError: func(err error) {
			w.Log.Warn("revocation: cannot fetch the CRL", "crl", w.CRLURL, "error", err.Error())
		},
		Interval: w.CRLInterval,
		Ticks:    w.crlTicks,
	}.Run(ctx)
}

func (w *Watcher) lastCRLTime() time.Time {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.lastCRL
}

// follow reads the feed from base until it breaks; connected says whether
// the stream was established.
func (w *Watcher) follow(ctx context.Context, base string) (connected bool, err error) {
	hc, err := w.client(base)
	if err != nil {
		return false, err
	}
	defer hc.CloseIdleConnections()
	w.mu.RLock()
	since := w.seq
	w.mu.RUnlock()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, strings.TrimRight(base, "/")+FeedPath+"?since="+strconv.FormatInt(since, 10), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return false, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	w.setFeed(true)
	defer func() {
		// What the feed said holds as long as a CRL fetched now would.
		w.mu.Lock()
		w.extend(w.now().Add(w.FeedValidity))
		w.mu.Unlock()
		w.setFeed(false)
	}()
	w.Log.Info("revocation feed connected", "ca", base, "since", since)
	// Silence for three heartbeats means a dead link.
	const silence = 3 * HeartbeatInterval
	alive := time.AfterFunc(silence, cancel)
	defer alive.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		alive.Reset(silence)
		w.mu.Lock()
		w.extend(w.now().Add(w.FeedValidity))
		w.mu.Unlock()
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return true, fmt.Errorf("bad feed line: %w", err)
		}
		if e.Heartbeat {
			w.mu.Lock()
			if e.Seq > w.seq {
				w.seq = e.Seq
			}
			w.mu.Unlock()
			continue
		}
		w.add(e)
	}
	if err := sc.Err(); err != nil {
		return true, err
	}
	return true, io.ErrUnexpectedEOF
}

func (w *Watcher) setFeed(up bool) {
	w.mu.Lock()
	w.feedUp = up
	w.mu.Unlock()
}

// fetchCRL downloads and verifies the issuing CA's CRL and adds its entries.
func (w *Watcher) fetchCRL(ctx context.Context) error {
	svid, err := w.Source.GetX509SVID()
	if err != nil {
		return err
	}
	if len(svid.Certificates) < 2 {
		return errors.New("the identity's chain has no intermediate to check the CRL against")
	}
	issuer := svid.Certificates[1]
	var errs []error
	for _, base := range w.CAURLs {
		hc, err := w.client(base)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = w.fetchCRLFrom(ctx, hc, strings.TrimRight(base, "/")+crlPath(issuer), issuer)
		hc.CloseIdleConnections()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if w.CRLURL != "" {
		hc, err := w.client(w.CRLURL)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		err = w.fetchCRLFrom(ctx, hc, w.CRLURL, issuer)
		hc.CloseIdleConnections()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (w *Watcher) fetchCRLFrom(ctx context.Context, hc *http.Client, u string, issuer *x509.Certificate) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, u, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("%s: the CRL is not signed by the issuing CA: %w", u, err)
	}
	now := w.now()
	if crl.NextUpdate.IsZero() || !now.Before(crl.NextUpdate) {
		return fmt.Errorf("%s: %w: its nextUpdate (%s) has passed: the CA is not refreshing it, or an old CRL is being replayed",
			u, ErrStaleCRL, crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	if crl.Number == nil {
		return fmt.Errorf("%s: the CRL has no CRL number (RFC 5280 requires one), so a replayed older CRL could not be told apart", u)
	}
	w.mu.RLock()
	have := w.crlNumber
	w.mu.RUnlock()
	if have != nil && crl.Number.Cmp(have) < 0 {
		return fmt.Errorf("%s: %w: CRL number %s is below %s, already seen: an older CRL is being replayed (or a CA replica's clock is behind)",
			u, ErrCRLRollback, crl.Number, have)
	}
	seq, _ := strconv.ParseInt(resp.Header.Get(SeqHeader), 10, 64)
	for _, e := range crl.RevokedCertificateEntries {
		w.add(Event{Serial: pki.FormatSerial(e.SerialNumber), Reason: e.ReasonCode, RevokedAt: e.RevocationTime})
	}
	w.mu.Lock()
	if w.crlNumber == nil || crl.Number.Cmp(w.crlNumber) > 0 {
		w.crlNumber = new(big.Int).Set(crl.Number)
	}
	w.extend(crl.NextUpdate)
	if seq > w.seq {
		w.seq = seq
	}
	w.lastCRL = time.Now() // real time: it schedules the next fetch
	w.mu.Unlock()
	return nil
}

// Errors for CRLs the watcher refuses.
var (
	ErrStaleCRL    = errors.New("stale CRL")
	ErrCRLRollback = errors.New("CRL rollback")
)

// SourceFromCertificate finds where to learn of revocations from a leaf
// the CA issued (it names its CRL and OCSP addresses in every leaf): an
// https address is the CA's API, which also serves the push feed; a plain
// http one (the CA's --http-listen) serves the CRL only. It returns the CA
// base URLs and the CRL URL, both empty when the leaf names neither.
func SourceFromCertificate(leaf, issuer *x509.Certificate) (caURLs []string, crlURL string) {
	for _, dp := range leaf.CRLDistributionPoints {
		u, err := url.Parse(dp)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			continue
		}
		if u.Scheme == "https" {
			if i := strings.LastIndex(u.Path, "/crl/"); i >= 0 {
				base := *u
				base.Path, base.RawQuery = u.Path[:i], ""
				return []string{base.String()}, ""
			}
		}
		return nil, dp
	}
	for _, o := range leaf.OCSPServer {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !strings.HasSuffix(u.Path, "/ocsp") {
			continue
		}
		base := *u
		base.Path, base.RawQuery = strings.TrimSuffix(u.Path, "/ocsp"), ""
		if u.Scheme == "https" {
			return []string{base.String()}, ""
		}
		return nil, base.String() + crlPath(issuer)
	}
	return nil, ""
}
