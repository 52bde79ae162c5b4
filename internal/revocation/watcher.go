package revocation

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

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
type Watcher struct {
	// CAURLs are the CA's https base URLs, tried in order.
	CAURLs []string
	Source Source
	// CRLInterval is how often the CRL is fetched while the feed is down;
	// default 30s.
	CRLInterval time.Duration
	// OnRevoke, if set, is called for each newly learnt revocation.
	OnRevoke func(Event)
	Log      *slog.Logger

	mu       sync.RWMutex
	revoked  map[string]Event
	seq      int64
	feedUp   bool
	lastCRL  time.Time
	initOnce sync.Once
}

func (w *Watcher) init() {
	w.initOnce.Do(func() {
		w.revoked = map[string]Event{}
		if w.CRLInterval <= 0 {
			w.CRLInterval = 30 * time.Second
		}
		if w.Log == nil {
			w.Log = slog.New(slog.DiscardHandler)
		}
	})
}

// Revoked reports whether the serial (lower-case hex) is revoked.
func (w *Watcher) Revoked(serial string) bool {
	w.init()
	w.mu.RLock()
	defer w.mu.RUnlock()
	_, ok := w.revoked[serial]
	return ok
}

// Check is a tlsconfig peer check: it refuses a revoked certificate.
func (w *Watcher) Check(id spiffeid.ID, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	serial := fmt.Sprintf("%x", chain[0].SerialNumber)
	if w.Revoked(serial) {
		return &tlsconfig.PeerError{Reason: tlsconfig.ReasonRevoked, ID: id, Cert: chain[0], Err: fmt.Errorf("certificate %s is revoked", serial)}
	}
	return nil
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
		now := time.Now()
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
	if len(w.CAURLs) == 0 {
		return errors.New("revocation watcher: no CA address")
	}
	if err := w.fetchCRL(ctx); err != nil {
		w.Log.Warn("revocation: cannot fetch the CRL; will retry", "error", err.Error())
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
	req, _ := http.NewRequestWithContext(cctx, http.MethodGet, strings.TrimRight(base, "/")+"/v1/revocations?since="+strconv.FormatInt(since, 10), nil)
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
	defer w.setFeed(false)
	w.Log.Info("revocation feed connected", "ca", base, "since", since)
	// A heartbeat comes every 15 seconds: silence for 45 means a dead link.
	alive := time.AfterFunc(45*time.Second, cancel)
	defer alive.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		alive.Reset(45 * time.Second)
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
		err = w.fetchCRLFrom(ctx, hc, strings.TrimRight(base, "/")+"/crl/"+IssuerKeyID(issuer)+".crl", issuer)
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
	seq, _ := strconv.ParseInt(resp.Header.Get("X-Mutual-Revocation-Seq"), 10, 64)
	for _, e := range crl.RevokedCertificateEntries {
		w.add(Event{Serial: fmt.Sprintf("%x", e.SerialNumber), Reason: e.ReasonCode, RevokedAt: e.RevocationTime})
	}
	w.mu.Lock()
	if seq > w.seq {
		w.seq = seq
	}
	w.lastCRL = time.Now()
	w.mu.Unlock()
	return nil
}
