// Package api defines the JSON bodies of the CA's HTTPS API under /v1/,
// shared by the server and its clients, and the strict decoder every request
// body goes through.
//
// Endpoints (admin means an mTLS client certificate whose SPIFFE ID path is
// under /admin/):
//
//	GET  /healthz             store reachable: 200, else 503
//	GET  /v1/bundle           BundleResponse
//	POST /v1/enroll           EnrollRequest → IssueResponse (join token)
//	POST /v1/renew            RenewRequest → IssueResponse (mTLS, current certificate)
//	POST /v1/tokens           TokenRequest → TokenResponse (admin)
//	GET  /v1/tokens           TokenList (admin)
//	GET  /v1/certificates     CertificateList (admin; ?spiffe_id=, ?valid=true, ?status=all|valid|expiring|revoked,
//	                          ?expiring_within=24h, ?limit=N (default 1000), ?after=CURSOR, ?pem=true)
//	POST /v1/revoke           RevokeRequest → RevokeResponse (admin)
//	POST /v1/entries          EntryRequest → Entry (admin)
//	GET  /v1/entries          EntryList (admin)
//	DELETE /v1/entries/{id}   (admin)
//	GET  /v1/node/entries     EntryList: the entries granted to the calling node (node mTLS)
//	POST /v1/node/svid        NodeSVIDRequest → IssueResponse (node mTLS)
//	POST /v1/tokens/{id}/void make an unused join token expire now (admin)
//	POST /v1/log/findings     FindingsReport (admin: the issuance log's monitor reports what it flagged)
//	GET  /v1/log/findings     FindingList (admin; ?limit=N (default 100))
//	GET  /v1/revocations      push feed: JSON lines after ?since=SEQ (any valid mTLS identity)
//	GET  /crl/{issuer}.crl    the issuing CA's CRL, DER (.pem for PEM)
//	POST /ocsp, GET /ocsp/{b64} OCSP (RFC 6960)
//
// Errors are a 4xx or 5xx status with an Error body whose code is one of the
// Code* constants.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// Error is the body of every failed request.
type Error struct {
	// Error says what went wrong and how to fix it.
	Error string `json:"error"`
	// Code is a stable machine-readable name for the failure.
	Code string `json:"code"`
}

// Duration is a time.Duration written as a Go duration string ("1h30m"). It is
// the one such type: the CA's settings file (pki.Duration is an alias) and the
// API bodies both use it.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration must be a string such as "1h" or "15m"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// BundleResponse carries the CA's trust bundle.
type BundleResponse struct {
	TrustDomain string `json:"trust_domain"`
	// RootsPEM are the trusted root certificates.
	RootsPEM string `json:"roots_pem"`
	// RootFingerprint is the hex SHA-256 of the first root.
	RootFingerprint string `json:"root_fingerprint"`
	// FederatedBundles are the roots (PEM) of each federated trust domain, by name.
	FederatedBundles map[string]string `json:"federated_bundles,omitempty"`
	// FederatedJWTBundles are the JWT authorities (a JWKS document) of each
	// federated trust domain that publishes any, by name.
	FederatedJWTBundles map[string]string `json:"federated_jwt_bundles,omitempty"`
}

// EnrollRequest exchanges a join token and a CSR for a certificate.
type EnrollRequest struct {
	Token string `json:"token"`
	// CSR is a PEM CERTIFICATE REQUEST signed with the new key.
	CSR string `json:"csr"`
	// TTL optionally asks for a shorter lifetime than the token grants.
	TTL Duration `json:"ttl,omitempty"`
}

// RenewRequest asks for a fresh certificate for the caller's identity.
type RenewRequest struct {
	CSR string   `json:"csr"`
	TTL Duration `json:"ttl,omitempty"`
}

// IssueResponse is a newly issued certificate.
type IssueResponse struct {
	SPIFFEID string `json:"spiffe_id"`
	Serial   string `json:"serial"`
	// ChainPEM is the leaf followed by its intermediates.
	ChainPEM  string    `json:"chain_pem"`
	RootsPEM  string    `json:"roots_pem"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// LogIndex is the certificate's index in the issuance log.
	LogIndex int64 `json:"log_index"`
	// ServerTime is the CA's clock when it answered: clients check the
	// certificate against it, not against their own clock, and say how far
	// apart the two are (zero from older CAs: use the HTTP Date header).
	ServerTime time.Time `json:"server_time,omitzero"`
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	SPIFFEID    string   `json:"spiffe_id"`
	TTL         Duration `json:"ttl,omitempty"`
	CertTTL     Duration `json:"cert_ttl,omitempty"`
	DNSNames    []string `json:"dns_names,omitempty"`
	IPAddresses []string `json:"ip_addresses,omitempty"`
	Roles       []string `json:"roles,omitempty"`
}

// TokenResponse carries a new join token; the secret is shown only here.
type TokenResponse struct {
	Token     string    `json:"token"`
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// TokenInfo describes a stored token (never its secret).
type TokenInfo struct {
	ID          string     `json:"id"`
	SPIFFEID    string     `json:"spiffe_id"`
	DNSNames    []string   `json:"dns_names,omitempty"`
	IPAddresses []string   `json:"ip_addresses,omitempty"`
	CertTTL     Duration   `json:"cert_ttl,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	CreatedBy   string     `json:"created_by"`
	UsedAt      *time.Time `json:"used_at,omitempty"`
	UsedSerial  string     `json:"used_serial,omitempty"`
}

// TokenList is the answer to GET /v1/tokens.
type TokenList struct {
	Tokens []TokenInfo `json:"tokens"`
}

// CertificateInfo describes an issued certificate.
type CertificateInfo struct {
	Serial           string     `json:"serial"`
	SPIFFEID         string     `json:"spiffe_id"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	IssuedAt         time.Time  `json:"issued_at"`
	RequestedBy      string     `json:"requested_by"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason string     `json:"revocation_reason,omitempty"`
	CertificatePEM   string     `json:"certificate_pem,omitempty"`
}

// CertificateStatus selects certificates by state in GET
// /v1/certificates?status=.
type CertificateStatus string

// The statuses a listing can select.
const (
	// StatusAll selects every certificate (the default).
	StatusAll CertificateStatus = "all"
	// StatusValid selects unexpired, unrevoked certificates.
	StatusValid CertificateStatus = "valid"
	// StatusExpiring selects valid certificates that expire within
	// ?expiring_within= (DefaultExpiringWithin when absent).
	StatusExpiring CertificateStatus = "expiring"
	// StatusRevoked selects revoked certificates, expired or not.
	StatusRevoked CertificateStatus = "revoked"
)

// CertificateQuery is one page of GET /v1/certificates: its query
// parameters, each left out when zero.
type CertificateQuery struct {
	SPIFFEID string
	Status   CertificateStatus
	// ExpiringWithin is what StatusExpiring calls soon; zero means
	// DefaultExpiringWithin.
	ExpiringWithin time.Duration
	// Limit is the page size; zero means the CA's default (1000).
	Limit int
	// After is the previous page's Next.
	After string
}

// Values encodes q as the query string of GET /v1/certificates.
func (q CertificateQuery) Values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("spiffe_id", q.SPIFFEID)
	set("status", string(q.Status))
	set("after", q.After)
	if q.ExpiringWithin != 0 {
		v.Set("expiring_within", q.ExpiringWithin.String())
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// DefaultExpiringWithin is what StatusExpiring calls soon.
const DefaultExpiringWithin = 24 * time.Hour

// CertificateStatuses are the statuses' names, in the order a filter offers
// them.
func CertificateStatuses() []string {
	return []string{string(StatusAll), string(StatusValid), string(StatusExpiring), string(StatusRevoked)}
}

// CertificateList is the answer to GET /v1/certificates.
type CertificateList struct {
	Certificates []CertificateInfo `json:"certificates"`
	// Next, when set, is where the next page starts: pass it as ?after=.
	// It is set when the page is full (more may follow).
	Next string `json:"next,omitempty"`
}

// RevokeRequest names a serial or an identity to revoke.
type RevokeRequest struct {
	Serial   string `json:"serial,omitempty"`
	SPIFFEID string `json:"spiffe_id,omitempty"`
	// Node revokes a node identity and every certificate obtained through it.
	Node string `json:"node,omitempty"`
	// Reason is an RFC 5280 reason name ("keyCompromise"); empty means unspecified.
	Reason string `json:"reason,omitempty"`
}

// Revoked is one certificate a revocation touched.
type Revoked struct {
	Serial         string `json:"serial"`
	SPIFFEID       string `json:"spiffe_id"`
	AlreadyRevoked bool   `json:"already_revoked,omitempty"`
}

// RevokeResponse lists what a revocation touched.
type RevokeResponse struct {
	Revoked []Revoked `json:"revoked"`
}

// Decode reads exactly one JSON object of type T from r, refusing unknown
// fields, trailing data and bodies over MaxBodyBytes. Its errors name the
// problem in words fit for an API client.
func Decode[T any](r io.Reader, v *T) error { return DecodeLimit(r, v, MaxBodyBytes) }

// DecodeLimit is Decode with a body limit of limit bytes instead of
// MaxBodyBytes, for the few requests that carry more.
//
// The body is decoded as it is read, not copied first: a request whose
// decoding fails is read on to the limit, so that a body over it is
// refused as such whatever it holds.
func DecodeLimit[T any](r io.Reader, v *T, limit int) error {
	body := &bodyReader{r: r, left: int64(limit) + 1}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	trailing := false
	if err == nil {
		_, terr := dec.Token()
		trailing = terr != io.EOF
	}
	if err != nil || trailing {
		io.Copy(io.Discard, body)
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case body.err != nil:
		return fmt.Errorf("read request body: %w", body.err)
	case body.left <= 0:
		return fmt.Errorf("request body larger than %d bytes", limit)
	case err == io.EOF:
		return errors.New("empty request body: send a JSON object")
	case errors.As(err, &se):
		return fmt.Errorf("request body is not valid JSON at byte %d: %v", se.Offset, err)
	case errors.As(err, &te):
		return fmt.Errorf("request field %q must be a %s, not a %s", te.Field, te.Type, te.Value)
	case err != nil:
		return fmt.Errorf("request body: %v", err)
	case trailing:
		return errors.New("request body has data after the JSON object")
	}
	return nil
}

// bodyReader reads a request body up to one byte past its limit (left
// counts what may still be read), keeping the read error, if any, apart
// from what the JSON decoder makes of the bytes.
type bodyReader struct {
	r    io.Reader
	left int64
	err  error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// EntryRequest asks for a registration entry.
type EntryRequest struct {
	SPIFFEID  string   `json:"spiffe_id"`
	Nodes     []string `json:"nodes"`
	Selectors []string `json:"selectors"`
	CertTTL   Duration `json:"cert_ttl,omitempty"`
	DNSNames  []string `json:"dns_names,omitempty"`
	Roles     []string `json:"roles,omitempty"`
}

// Entry is a registration entry.
type Entry struct {
	ID        string    `json:"id"`
	SPIFFEID  string    `json:"spiffe_id"`
	Nodes     []string  `json:"nodes"`
	Selectors []string  `json:"selectors"`
	CertTTL   Duration  `json:"cert_ttl,omitempty"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	Roles     []string  `json:"roles,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// EntryList is the answer to GET /v1/entries and GET /v1/node/entries.
type EntryList struct {
	Entries []Entry `json:"entries"`
}

// NodeSVIDRequest asks, as a node, for the identity of one entry.
type NodeSVIDRequest struct {
	EntryID string `json:"entry_id"`
	CSR     string `json:"csr"`
}
