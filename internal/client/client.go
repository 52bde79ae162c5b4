// Package client talks to the CA's HTTPS API: enrollment with a join token,
// renewal over mTLS, and the admin operations. It fails over between the
// CA's addresses in order.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Client calls one CA, reachable at one or more base URLs.
type Client struct {
	// Retries is how many more rounds over every address are made when all
	// are unreachable or unavailable; zero means 3, negative means none.
	Retries int
	// AttemptTimeout bounds how long one address may take to answer while
	// another remains to be tried, so that a frozen replica costs a bounded
	// stall instead of the caller's whole deadline; zero means 10 s,
	// negative means no bound. With a single address only ctx bounds it.
	// An enrollment cut off this way is safe to send elsewhere: the same
	// CSR is answered the certificate the token already paid for.
	AttemptTimeout time.Duration

	urls []string
	http *http.Client
	// serverID is the CA's identity; zero accepts any trust domain's
	// spiffe://TD/mutual/server.
	serverID spiffeid.ID
	now      func() time.Time
	tls      *tls.Config
	// leaf is the client certificate's, when there is one.
	leaf *x509.Certificate
}

// Option adjusts a Client made by New.
type Option func(*Client)

// WithServerID makes the client accept only a CA that presents exactly id
// (spiffe://TD/mutual/server, see pki.ServerID).
func WithServerID(id spiffeid.ID) Option { return func(c *Client) { c.serverID = id } }

// WithClock makes the client read the time from now instead of time.Now, to
// test what a client whose clock is off does.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithCertificateSource makes the client present, at each handshake, the
// certificate get returns (an identity that rotates, such as a Workload API
// source's) instead of New's fixed one. The CA must then present
// spiffe://TD/mutual/server of the certificate's trust domain: pass
// WithServerID too when that is known.
func WithCertificateSource(get func() (*tls.Certificate, error)) Option {
	return func(c *Client) {
		c.tls.Certificates = nil
		c.tls.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() }
	}
}

// New makes a client that trusts roots and, when cert is not nil, presents it
// as its TLS client certificate.
//
// The CA is accepted only by its own identity: a server certificate that
// verifies to roots for the address's host name is not enough, since any
// workload may be granted that host name. The server must present
// spiffe://TD/mutual/server, where TD is the trust domain of cert (or of
// WithServerID); without either, the server must present the CA server
// identity of the trust domain its chain to roots allows (the intermediate
// is constrained to one).
func New(urls []string, roots []*x509.Certificate, cert *tls.Certificate, opts ...Option) (*Client, error) {
	if len(urls) == 0 {
		return nil, errors.New("no CA address: pass --server https://HOST:PORT")
	}
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "https" || pu.Host == "" {
			return nil, fmt.Errorf("CA address %q is not an https URL (https://HOST:PORT)", u)
		}
	}
	pool := pki.CertPool(roots)
	c := &Client{urls: urls, now: time.Now}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, VerifyConnection: c.verifyServer}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
		if len(cert.Certificate) > 0 {
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			id, err := x509svid.IDFromCert(leaf)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			c.serverID = pki.ServerID(id.TrustDomain())
			c.leaf = leaf
		}
	}
	c.tls = cfg
	for _, o := range opts {
		o(c)
	}
	tr := &http.Transport{
		TLSClientConfig:     cfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	c.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return c, nil
}

// NotCAError is a server that verified under the trusted roots but is not
// the CA service: it presented another identity. Nothing is sent to it.
type NotCAError struct {
	// Got is the identity the server presented (zero when none).
	Got spiffeid.ID
	// Want is the CA's identity, or zero when any trust domain's
	// spiffe://TD/mutual/server was acceptable.
	Want spiffeid.ID
}

// Error says what the server presented and what the CA would have.
func (e *NotCAError) Error() string {
	want := e.Want.String()
	if e.Want.IsZero() {
		want = "spiffe://TD/mutual/server"
	}
	got := "no SPIFFE ID"
	if !e.Got.IsZero() {
		got = e.Got.String()
	}
	return fmt.Sprintf("the server presents %s, not the CA's identity %s: something other than the CA answers at this address (a workload granted the CA's host name?); nothing was sent to it", got, want)
}

// verifyServer runs after the chain and host name verified: it accepts only
// the CA server's own identity.
func (c *Client) verifyServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return &NotCAError{Want: c.serverID}
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return &NotCAError{Want: c.serverID}
	}
	if c.serverID.IsZero() {
		if pki.KindOf(id) != pki.KindServer {
			return &NotCAError{Got: id}
		}
		return nil
	}
	if id != c.serverID {
		return &NotCAError{Got: id, Want: c.serverID}
	}
	return nil
}

// HTTPClient returns the HTTP client the API calls use, for other requests
// to the CA (the issuance log's checkpoints and tiles, the revocation feed,
// the CRL): it trusts only the client's roots, presents its certificate,
// and accepts the server only as the CA's own identity (a *NotCAError
// otherwise, before anything is sent). It does not fail over between
// addresses: the caller picks one of URLs.
func (c *Client) HTTPClient() *http.Client { return c.http }

// URLs returns the CA addresses the client uses.
func (c *Client) URLs() []string { return c.urls }

// CloseIdleConnections drops pooled connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// APIError is a failure answered by the CA.
type APIError struct {
	URL    string
	Status int
	// Code is the CA's machine-readable reason, one of the api.Code*
	// constants (api.CodeTokenUsed, ...).
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d from %s)", e.Message, e.Status, e.URL)
}

// Unavailable reports whether the failure is transient (worth another CA
// address or a retry).
func (e *APIError) Unavailable() bool {
	return e.Status == http.StatusServiceUnavailable || e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout
}

// do sends a request to each CA address in turn until one answers with
// something other than a network failure or a 503; when all fail that way it
// tries them all again, with backoff (0.5s, 1s, 2s), before giving up.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.doTimed(ctx, method, path, in, out, nil)
}

// answerTime is when an answer was sent by the CA's clock (its Date header)
// and received by ours.
type answerTime struct {
	server, local time.Time
}

// doTimed is do, also noting in at (when not nil) the answer's times. When
// the CA refuses the client certificate it asks the CA's clock, to say so
// when the cause is a clock that is off.
func (c *Client) doTimed(ctx context.Context, method, path string, in, out any, at *answerTime) error {
	err := c.doRounds(ctx, method, path, in, out, at)
	if err != nil && c.leaf != nil {
		err = c.explainRefusal(ctx, c.leaf, err)
	}
	return err
}

// doRounds makes the attempts of doTimed.
func (c *Client) doRounds(ctx context.Context, method, path string, in, out any, at *answerTime) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	var errs []error
	for attempt := 0; ; attempt++ {
		transient := false
		for _, base := range c.urls {
			actx, cancel := ctx, context.CancelFunc(func() {})
			if d := c.attemptTimeout(); d > 0 && len(c.urls) > 1 {
				actx, cancel = context.WithTimeout(ctx, d)
			}
			err := c.once(actx, method, strings.TrimRight(base, "/")+path, body, out, at)
			cancel()
			if err == nil {
				return nil
			}
			var ae *APIError
			if errors.As(err, &ae) && !ae.Unavailable() {
				return err
			}
			if ctx.Err() != nil {
				return err
			}
			// Another address may be the real CA; waiting will not make
			// an impostor one.
			var nc *NotCAError
			transient = transient || !errors.As(err, &nc)
			errs = append(errs, err)
		}
		if attempt == c.retries() || !transient {
			return errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			return errors.Join(errs...)
		case <-time.After(500 * time.Millisecond << attempt):
		}
		errs = errs[:0]
	}
}

func (c *Client) attemptTimeout() time.Duration {
	if c.AttemptTimeout == 0 {
		return 10 * time.Second
	}
	return c.AttemptTimeout
}

func (c *Client) retries() int {
	if c.Retries < 0 {
		return 0
	}
	if c.Retries == 0 {
		return 3
	}
	return c.Retries
}

func (c *Client) once(ctx context.Context, method, u string, body []byte, out any, at *answerTime) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return explainTransport(u, err)
	}
	defer resp.Body.Close()
	if at != nil {
		at.local = c.now()
		at.server, _ = http.ParseTime(resp.Header.Get("Date"))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{URL: u, Status: resp.StatusCode, Code: e.Code, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	if raw, isRaw := out.(*[]byte); isRaw {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: the CA's answer is not the expected JSON: %w", u, err)
	}
	return nil
}

// explainTransport turns the common TLS failures into advice.
func explainTransport(u string, err error) error {
	var ue0 *url.Error
	if errors.As(err, &ue0) {
		err = ue0.Err
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: connection refused: is the CA service running at that address? (%w)", u, err)
	}
	var nc *NotCAError
	if errors.As(err, &nc) {
		return fmt.Errorf("%s: %w", u, nc)
	}
	var ce *tls.CertificateVerificationError
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ue):
		return fmt.Errorf("%s: the server's certificate is not signed by the trusted roots (bundle.pem): %w", u, err)
	case errors.As(err, &he):
		return fmt.Errorf("%s: the server's certificate is not valid for this host name; use an address in its SANs: %w", u, err)
	case errors.As(err, &ce):
		return fmt.Errorf("%s: the server's certificate did not verify: %w", u, err)
	case strings.Contains(err.Error(), "certificate required"), strings.Contains(err.Error(), "bad certificate"):
		return fmt.Errorf("%s: the CA refused our client certificate (expired, or not from this CA?): %w", u, err)
	}
	return fmt.Errorf("%s: %w", u, err)
}

// Bundle fetches the trust bundle.
func (c *Client) Bundle(ctx context.Context) (*api.BundleResponse, error) {
	var out api.BundleResponse
	return &out, c.do(ctx, http.MethodGet, "/v1/bundle", nil, &out)
}

// Enroll exchanges a join token and a CSR for a certificate. The answer's
// ServerTime is the CA's clock (from the HTTP Date header for a CA that
// does not say it).
func (c *Client) Enroll(ctx context.Context, req api.EnrollRequest) (*api.IssueResponse, error) {
	out, _, err := c.issue(ctx, "/v1/enroll", req)
	return out, err
}

// Renew asks for a new certificate for the client certificate's identity;
// ServerTime as for Enroll.
func (c *Client) Renew(ctx context.Context, req api.RenewRequest) (*api.IssueResponse, error) {
	out, _, err := c.issue(ctx, "/v1/renew", req)
	return out, err
}

// issue posts an issuing request and returns the answer with the CA's
// clock in ServerTime, and the local clock when the answer arrived.
func (c *Client) issue(ctx context.Context, path string, req any) (*api.IssueResponse, time.Time, error) {
	var out api.IssueResponse
	var at answerTime
	if err := c.doTimed(ctx, http.MethodPost, path, req, &out, &at); err != nil {
		// An empty answer, not nil, as callers of Enroll and Renew expect.
		return &out, time.Time{}, err
	}
	if out.ServerTime.IsZero() {
		out.ServerTime = at.server
	}
	return &out, at.local, nil
}

// ServerTime asks the CA for its clock (the Date header of an anonymous
// request) and returns it with the local clock at the answer; its
// precision is a second.
//
// It asks without the client certificate, since a CA whose clock is off
// refuses that certificate in the handshake.
func (c *Client) ServerTime(ctx context.Context) (server, local time.Time, err error) {
	cfg := c.tls.Clone()
	cfg.Certificates = nil
	anon := &Client{urls: c.urls, now: c.now, serverID: c.serverID, Retries: -1}
	cfg.VerifyConnection = anon.verifyServer
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	anon.http = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var at answerTime
	if err := anon.doTimed(ctx, http.MethodGet, "/livez", nil, nil, &at); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if at.server.IsZero() {
		return time.Time{}, time.Time{}, errors.New("the CA's answer carries no Date header")
	}
	return at.server, at.local, nil
}

// CreateToken makes a join token (admin).
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (*api.TokenResponse, error) {
	var out api.TokenResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
}

// ListTokens lists join tokens (admin).
func (c *Client) ListTokens(ctx context.Context) (*api.TokenList, error) {
	var out api.TokenList
	return &out, c.do(ctx, http.MethodGet, "/v1/tokens", nil, &out)
}

// ListCertificates lists issued certificates (admin): the first page.
func (c *Client) ListCertificates(ctx context.Context, spiffeID string, validOnly bool) (*api.CertificateList, error) {
	return c.CertificatesPage(ctx, spiffeID, validOnly, 0, "")
}

// ListAllCertificates lists every issued certificate matching spiffeID and
// validOnly (admin), newest first, page after page of pageSize (0: the
// server's default), calling page for each.
func (c *Client) ListAllCertificates(ctx context.Context, spiffeID string, validOnly bool, pageSize int, page func(*api.CertificateList) error) error {
	after := ""
	for {
		out, err := c.CertificatesPage(ctx, spiffeID, validOnly, pageSize, after)
		if err != nil {
			return err
		}
		if err := page(out); err != nil {
			return err
		}
		if out.Next == "" || len(out.Certificates) == 0 {
			return nil
		}
		after = out.Next
	}
}

// CertificatesPage lists one page of issued certificates matching spiffeID
// and validOnly (admin), newest first: at most limit (0: the server's
// default) after the cursor after ("" for the first page). Its Next is the
// cursor of the following page, "" at the end.
func (c *Client) CertificatesPage(ctx context.Context, spiffeID string, validOnly bool, limit int, after string) (*api.CertificateList, error) {
	q := url.Values{}
	if spiffeID != "" {
		q.Set("spiffe_id", spiffeID)
	}
	if validOnly {
		q.Set("valid", "true")
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if after != "" {
		q.Set("after", after)
	}
	var out api.CertificateList
	return &out, c.do(ctx, http.MethodGet, "/v1/certificates?"+q.Encode(), nil, &out)
}

// CertificatesQuery lists one page of issued certificates selected by q,
// newest first (admin).
func (c *Client) CertificatesQuery(ctx context.Context, q api.CertificateQuery) (*api.CertificateList, error) {
	var out api.CertificateList
	return &out, c.do(ctx, http.MethodGet, "/v1/certificates?"+q.Values().Encode(), nil, &out)
}

// VoidToken makes an unused join token expire now (admin).
func (c *Client) VoidToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/v1/tokens/"+url.PathEscape(id)+"/void", struct{}{}, nil)
}

// ReportFindings sends the issuance log monitor's findings to the CA
// (admin).
func (c *Client) ReportFindings(ctx context.Context, r api.FindingsReport) error {
	return c.do(ctx, http.MethodPost, "/v1/log/findings", r, nil)
}

// LogFindings lists the monitor findings the CA holds, latest first, up to
// limit (0: the CA's default) (admin).
func (c *Client) LogFindings(ctx context.Context, limit int) (*api.FindingList, error) {
	q := ""
	if limit > 0 {
		q = "?limit=" + strconv.Itoa(limit)
	}
	var out api.FindingList
	return &out, c.do(ctx, http.MethodGet, "/v1/log/findings"+q, nil, &out)
}

// Revoke revokes a serial or an identity (admin).
func (c *Client) Revoke(ctx context.Context, req api.RevokeRequest) (*api.RevokeResponse, error) {
	var out api.RevokeResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/revoke", req, &out)
}

// CreateEntry makes a registration entry (admin).
func (c *Client) CreateEntry(ctx context.Context, req api.EntryRequest) (*api.Entry, error) {
	var out api.Entry
	return &out, c.do(ctx, http.MethodPost, "/v1/entries", req, &out)
}

// ListEntries lists registration entries (admin).
func (c *Client) ListEntries(ctx context.Context) (*api.EntryList, error) {
	var out api.EntryList
	return &out, c.do(ctx, http.MethodGet, "/v1/entries", nil, &out)
}

// DeleteEntry removes a registration entry (admin).
func (c *Client) DeleteEntry(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/entries/"+url.PathEscape(id), nil, nil)
}

// NodeEntries lists the entries granted to the calling node.
func (c *Client) NodeEntries(ctx context.Context) (*api.EntryList, error) {
	var out api.EntryList
	return &out, c.do(ctx, http.MethodGet, "/v1/node/entries", nil, &out)
}

// NodeSVID obtains, as a node, the identity of one entry for a workload.
func (c *Client) NodeSVID(ctx context.Context, req api.NodeSVIDRequest) (*api.IssueResponse, error) {
	var out api.IssueResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/node/svid", req, &out)
}
