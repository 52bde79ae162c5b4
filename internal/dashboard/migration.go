package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// Proxy is a proxy whose migration report the dashboard reads: GET URL
// (its metrics listener's /migration) when the page is shown.
type Proxy struct {
	// Name is how the page names it.
	Name string
	// URL is the report's address. An https URL is read over mTLS with
	// the operator's identity, the proxy authenticated by a SPIFFE ID of
	// the operator's trust domain; an http URL (the proxy's metrics
	// listener serves plain HTTP) is read as is, and the page says the
	// report is not authenticated.
	URL string
}

// ParseProxy reads a --proxy flag, "NAME=URL" or a bare URL (named by its
// host), and checks the URL.
func ParseProxy(s string) (Proxy, error) {
	name, raw, ok := strings.Cut(s, "=")
	if !ok || strings.Contains(name, "/") {
		name, raw = "", s
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Proxy{}, fmt.Errorf("%q: want NAME=URL of a proxy's migration report, such as web=http://10.0.0.5:9102/migration", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/migration"
	}
	if name == "" {
		name = u.Host
	}
	return Proxy{Name: name, URL: u.String()}, nil
}

// reportMaxBytes bounds one proxy's report (a proxy lists at most 10,000
// sources).
const reportMaxBytes = 8 << 20

// proxyTimeout bounds how long the page waits for one proxy.
const proxyTimeout = 5 * time.Second

// sourcesShown bounds the sources listed per proxy.
const sourcesShown = 100

// migrationData is the migration page: one report per proxy.
type migrationData struct {
	Proxies []proxyReport
}

type proxyReport struct {
	Proxy
	// Authenticated says the report came over mTLS from a proxy of the
	// trust domain.
	Authenticated bool
	Report        *api.MigrationReport
	// Hidden counts the sources beyond sourcesShown.
	Hidden int
	Err    string
}

// newProxyClient is the HTTP client the dashboard reads proxies with:
// mTLS with the operator's identity for https.
func newProxyClient(cfg Config) (*http.Client, error) {
	id := cfg.Identity
	svid := &x509svid.SVID{ID: id.ID, Certificates: id.Chain, PrivateKey: id.Key}
	bundle := x509bundle.FromX509Authorities(id.ID.TrustDomain(), id.Roots)
	// Any proxy of the trust domain may serve a report: the operator named
	// its address, and a report is read, never acted upon.
	tc, err := tlsconfig.ClientConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(id.ID.TrustDomain()), "")
	if err != nil {
		return nil, fmt.Errorf("dashboard: mTLS to proxies: %w", err)
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute},
		Timeout:   proxyTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the proxy answered with a redirect; give the URL of its /migration report itself")
		},
	}, nil
}

func (d *Dashboard) migration(w http.ResponseWriter, r *http.Request) {
	data := migrationData{Proxies: make([]proxyReport, len(d.cfg.Proxies))}
	var wg sync.WaitGroup
	for i, p := range d.cfg.Proxies {
		wg.Go(func() { data.Proxies[i] = d.readProxy(r.Context(), p) })
	}
	wg.Wait()
	d.render(w, r, http.StatusOK, "migration", "Migration to strict mTLS", data)
}

// readProxy fetches one proxy's report.
func (d *Dashboard) readProxy(ctx context.Context, p Proxy) proxyReport {
	out := proxyReport{Proxy: p}
	ctx, cancel := context.WithTimeout(ctx, proxyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		out.Err = err.Error()
		return out
	}
	resp, err := d.proxies.Do(req)
	if err != nil {
		out.Err = "unreachable: " + err.Error()
		return out
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		out.Err = fmt.Sprintf("answered %s; is this the proxy's metrics address, and is it in permissive mode?", resp.Status)
		return out
	}
	var rep api.MigrationReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, reportMaxBytes)).Decode(&rep); err != nil {
		out.Err = "not a migration report: " + err.Error()
		return out
	}
	out.Authenticated = resp.TLS != nil
	if n := len(rep.Sources); n > sourcesShown {
		out.Hidden, rep.Sources = n-sourcesShown, rep.Sources[:sourcesShown]
	}
	out.Report = &rep
	return out
}
