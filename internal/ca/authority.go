// Package ca is the certificate authority's logic: join tokens, enrollment,
// renewal and revocation, each a pipeline read top to bottom:
// authenticate → authorize against policy → build → sign → store → answer.
// It knows nothing of HTTP; the server package is its edge.
package ca

import (
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/token"
	"github.com/mutual-tls/mutual/internal/translog"
)

// Store is what the Authority needs from its state; *store.DB provides it.
type Store interface {
	CreateToken(ctx context.Context, t store.Token) error
	GetToken(ctx context.Context, id string) (store.Token, error)
	ListTokens(ctx context.Context, limit int) ([]store.Token, error)
	RecordIssuance(ctx context.Context, c *store.Certificate, tokenID string, now time.Time) error
	GetCertificate(ctx context.Context, serial string) (store.Certificate, error)
	ListCertificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error)
	ForEachLive(ctx context.Context, now time.Time, fn func(store.Live) error) error
	RecentRevocations(ctx context.Context, limit int) ([]store.Certificate, error)
	RevokeLineage(ctx context.Context, serial string, reason int, at time.Time) ([]store.Revocation, error)
	RevokeIdentity(ctx context.Context, spiffeID string, reason int, at time.Time) ([]store.Revocation, error)
	RevokeNode(ctx context.Context, nodeID string, reason int, at time.Time) ([]store.Revocation, error)
	CreateEntry(ctx context.Context, e store.Entry) error
	GetEntry(ctx context.Context, id string) (store.Entry, error)
	ListEntries(ctx context.Context) ([]store.Entry, error)
	DeleteEntry(ctx context.Context, id string) error
}

// Authority issues, renews and revokes certificates under one policy.
type Authority struct {
	// Issuer signs leaves with the intermediate key.
	Issuer *pki.Issuer
	// Roots are the trust anchors handed to every requester.
	Roots []*x509.Certificate
	// Retired are the intermediates a rotation replaced that have not
	// expired: Import accepts what they signed, and a replayed enrollment
	// is answered with the chain of the one that signed it.
	Retired []*x509.Certificate
	// CrossSigned are intermediates certified by the roots a root rotation
	// is replacing (pki.CrossSignedFile): every chain handed out carries
	// the copy of its intermediate, so that parties still trusting only
	// an old root verify it during the overlap.
	CrossSigned []*x509.Certificate
	// Policy bounds what may be issued.
	Policy *policy.Policy
	// Store keeps tokens and certificates.
	Store Store
	// URLs are the CA's public addresses, written into join tokens.
	URLs []string
	// Now and Rand may be replaced by tests; nil means time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
	// Log receives one line per issuance, refusal and revocation; nil discards.
	Log *slog.Logger
	// CRLURL and OCSPURL, when set, are written into every leaf (CRL
	// distribution point, authority information access).
	CRLURL, OCSPURL string
	// OnRevoke, if set, hears of every certificate newly revoked here.
	OnRevoke func(serial string)
	// OnFederationChange, if set, hears of every federation added or
	// removed here.
	OnFederationChange func()

	// mu guards Issuer, Retired, CrossSigned and CRLURL once Rotate has
	// been called: a running service moves to a new intermediate while
	// requests are in flight.
	mu sync.RWMutex
}

// Rotate makes issuer sign from now on, with retired and cross as the new
// Retired and CrossSigned and crlURL written into new leaves. It is safe
// while requests are served: one in flight finishes with the intermediate
// it started with (whose key the caller keeps open).
func (a *Authority) Rotate(issuer *pki.Issuer, retired, cross []*x509.Certificate, crlURL string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.Issuer, a.Retired, a.CrossSigned, a.CRLURL = issuer, retired, cross, crlURL
}

// signing is the intermediate that signs now, its CRL's URL, and the
// intermediates of the chains handed out (retired, cross-signed).
func (a *Authority) signing() (is *pki.Issuer, crlURL string, retired, cross []*x509.Certificate) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.Issuer, a.CRLURL, a.Retired, a.CrossSigned
}

func (a *Authority) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authority) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

// RootFingerprint is the SHA-256 of the first root, as join tokens carry it.
func (a *Authority) RootFingerprint() [32]byte { return pki.Fingerprint(a.Roots[0]) }

// Issued is the answer to an enrollment or renewal. It carries the
// certificate as signed (DER) with the facts an answer states, not a
// parsed copy: issuing does not need one, Certificate makes it.
type Issued struct {
	ID spiffeid.ID
	// DER is the certificate.
	DER []byte
	// Serial is its serial number (pki.FormatSerial), NotBefore and
	// NotAfter its validity.
	Serial              string
	NotBefore, NotAfter time.Time
	// Intermediates certify it: DER followed by them is its chain.
	Intermediates []*x509.Certificate
	Roots         []*x509.Certificate
	// LogIndex is the certificate's index in the issuance log.
	LogIndex int64
}

// Certificate parses the issued certificate.
func (is *Issued) Certificate() (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(is.DER)
	if err != nil {
		return nil, fmt.Errorf("issued certificate %s: %w", is.Serial, err)
	}
	return c, nil
}

// NormalizeSerial accepts a serial as openssl or a browser prints it
// ("3A:0F:...", "0x3a0f...") and returns the canonical form (pki.FormatSerial).
func NormalizeSerial(s string) (string, error) {
	// More than 64 hex digits as typed (leading zeros count) is refused.
	digits := strings.TrimPrefix(strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s))), "0x")
	n, err := pki.ParseSerial(s)
	if err != nil || n.Sign() <= 0 || len(digits) > 64 {
		return "", newErr(KindInvalid, api.CodeBadSerial, nil, "%q is not a certificate serial number (hex digits, colons allowed)", s)
	}
	return pki.FormatSerial(n), nil
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	// ID is the identity the token grants.
	ID string
	// TTL is how long the token stays usable; zero means policy.DefaultTokenTTL.
	TTL time.Duration
	// CertTTL is the lifetime of the certificate it yields; zero means the policy default.
	CertTTL time.Duration
	// DNSNames and IPAddresses may be put in the certificate.
	DNSNames    []string
	IPAddresses []string
	// Roles are carried by the certificate (mutual's roles extension).
	Roles []string
}

// CreateToken makes a single-use join token for r, stores its hash and
// returns the token string (the only time the secret exists in full).
func (a *Authority) CreateToken(ctx context.Context, by spiffeid.ID, r TokenRequest) (string, store.Token, error) {
	id, err := a.Policy.ParseID(r.ID)
	if err != nil {
		return "", store.Token{}, classify(err)
	}
	if r.TTL == 0 {
		r.TTL = policy.DefaultTokenTTL
	}
	dns, ips, err := policy.ParseNames(r.DNSNames, r.IPAddresses)
	if err != nil {
		return "", store.Token{}, classify(err)
	}
	if err := policy.CheckRoles(r.Roles); err != nil {
		return "", store.Token{}, classify(err)
	}
	if err := a.Policy.CheckTokenGrant(policy.Grant{ID: id, TTL: r.CertTTL}, r.TTL); err != nil {
		return "", store.Token{}, classify(err)
	}
	t, err := token.New(a.Rand, a.URLs, a.RootFingerprint())
	if err != nil {
		return "", store.Token{}, newErr(KindUnavailable, api.CodeInternal, err, "make token: %v", err)
	}
	now := a.now()
	rec := store.Token{
		ID: t.ID, SecretHash: t.SecretHash(), SPIFFEID: id.String(),
		DNSNames: dns, IPAddresses: ipStrings(ips), CertTTL: r.CertTTL,
		CreatedAt: now, ExpiresAt: now.Add(r.TTL), CreatedBy: by.String(), Roles: r.Roles,
	}
	if err := a.Store.CreateToken(ctx, rec); err != nil {
		return "", store.Token{}, classify(err)
	}
	a.log().Info("token created", "token_id", t.ID, "spiffe_id", id.String(), "expires", rec.ExpiresAt, "by", by.String())
	return t.String(), rec, nil
}

// ListTokens returns the newest tokens (never their secrets).
func (a *Authority) ListTokens(ctx context.Context) ([]store.Token, error) {
	ts, err := a.Store.ListTokens(ctx, 0)
	return ts, classify(err)
}

// Enroll exchanges a join token and a CSR for a certificate. The identity and
// names come from the token; the token is consumed in the same transaction
// that stores the certificate, so it can be used once only, across replicas.
func (a *Authority) Enroll(ctx context.Context, tokenString string, csrPEM []byte, ttl time.Duration) (*Issued, error) {
	// Authenticate.
	t, err := token.Parse(tokenString)
	if err != nil {
		return nil, newErr(KindUnauthenticated, api.CodeTokenMalformed, err, "%v", err)
	}
	if fp := a.RootFingerprint(); subtle.ConstantTimeCompare(fp[:], t.RootFingerprint[:]) != 1 {
		return nil, newErr(KindUnauthenticated, api.CodeTokenWrongCA, nil, "the join token was made for another CA (its root fingerprint differs from this CA's)")
	}
	rec, err := a.Store.GetToken(ctx, t.ID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !t.SecretMatches(rec.SecretHash)) {
		return nil, newErr(KindUnauthenticated, api.CodeTokenUnknown, nil, "the join token %s is not known to this CA; ask an operator for a new one", t.ID)
	}
	if err != nil {
		return nil, classify(err)
	}
	now := a.now()
	if !rec.UsedAt.IsZero() {
		// A retry of the request that used the token (its answer was lost in
		// a failover) gets the same certificate: same token, and a CSR for
		// the same key, signed by it. Anyone else is refused.
		if is := a.replay(ctx, rec, csrPEM); is != nil {
			a.log().Info("enrollment replayed", "token_id", t.ID, "serial", rec.UsedSerial)
			return is, nil
		}
		return nil, classify(fmt.Errorf("token %s: %w at %s", t.ID, store.ErrTokenUsed, rec.UsedAt.Format(time.RFC3339)))
	}
	if !now.Before(rec.ExpiresAt) {
		return nil, classify(fmt.Errorf("token %s: %w at %s", t.ID, store.ErrTokenExpired, rec.ExpiresAt.Format(time.RFC3339)))
	}
	// Authorize.
	id, err := spiffeid.FromString(rec.SPIFFEID)
	if err != nil {
		return nil, classify(err)
	}
	grant := policy.Grant{ID: id, DNSNames: rec.DNSNames, TTL: rec.CertTTL, Roles: rec.Roles, Via: policy.ViaToken}
	for _, s := range rec.IPAddresses {
		grant.IPAddresses = append(grant.IPAddresses, net.ParseIP(s))
	}
	is, err := a.issue(ctx, issueRequest{grant: grant, csrPEM: csrPEM, ttl: ttl, requestedBy: translog.TokenRequester(t.ID),
		tokenID: t.ID, origin: origin{tokenCreated: rec.CreatedAt}})
	if errors.Is(err, store.ErrTokenUsed) {
		// Used while this request was under way: by an earlier attempt of
		// it, on a replica killed after its commit and before its answer,
		// whose certificate this retry gets; anyone else stays refused.
		if rec, rerr := a.Store.GetToken(ctx, t.ID); rerr == nil {
			if is := a.replay(ctx, rec, csrPEM); is != nil {
				a.log().Info("enrollment replayed", "token_id", t.ID, "serial", rec.UsedSerial)
				return is, nil
			}
		}
	}
	return is, err
}

// Renew issues a fresh certificate for the identity of peer, a certificate
// the TLS layer has already verified. peer must be one this CA issued and has
// not revoked; the new certificate keeps its identity and names. A workload
// certificate granted by a registration entry renews only while that entry
// exists and grants it to its node.
//
// That peer, its identity and its node are not revoked is checked again
// inside the issuing transaction, ordered against revocations: a
// revocation that has answered success is never overtaken by a renewal.
func (a *Authority) Renew(ctx context.Context, peer *x509.Certificate, csrPEM []byte, ttl time.Duration) (*Issued, error) {
	id, rec, err := a.peerRecord(ctx, peer)
	if err != nil {
		return nil, err
	}
	if rec.EntryID != "" {
		if err := a.entryStillGrants(ctx, rec); err != nil {
			return nil, err
		}
	}
	// A renewed workload certificate stays tied to the node it came through,
	// so that revoking the node takes it out too, and to its entry.
	return a.issue(ctx, issueRequest{
		grant: a.Policy.RenewalGrant(id, peer, identity.Roles(peer)), csrPEM: csrPEM, ttl: ttl,
		requestedBy: translog.RenewalRequester(rec.Serial),
		origin:      origin{node: rec.NodeID, renewedFrom: rec.Serial, entry: rec.EntryID, presented: rec.Serial},
	})
}

// entryStillGrants refuses the renewal of an entry-issued certificate whose
// entry was deleted or no longer grants its identity to its node.
func (a *Authority) entryStillGrants(ctx context.Context, rec store.Certificate) error {
	e, err := a.Store.GetEntry(ctx, rec.EntryID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return classify(err)
	}
	node, nerr := spiffeid.FromString(rec.NodeID)
	if err != nil || nerr != nil || e.SPIFFEID != rec.SPIFFEID || !entryGrants(e, node) {
		a.log().Warn("renewal refused: entry withdrawn", "serial", rec.Serial, "spiffe_id", rec.SPIFFEID, "entry_id", rec.EntryID, "node_id", rec.NodeID)
		return newErr(KindForbidden, api.CodeEntryNotGranted, store.ErrNotGranted,
			"certificate %s of %s was granted by registration entry %s, which no longer exists or no longer grants it to %s: it cannot renew; the workload's agent obtains its identity while an entry grants one",
			rec.Serial, rec.SPIFFEID, rec.EntryID, rec.NodeID)
	}
	return nil
}

// origin is where a certificate comes from: what issue records with it and
// checks inside the issuing transaction.
type origin struct {
	// node is the node a workload certificate is obtained through.
	node string
	// renewedFrom is the serial renewed; entry the registration entry that
	// granted the identity; presented the serial that authenticated the request.
	renewedFrom, entry, presented string
	// tokenCreated is when the join token paying for an enrollment was made.
	tokenCreated time.Time
}

// CheckPeer returns the SPIFFE ID of a verified client certificate if this
// CA issued it and it is neither revoked nor expired.
func (a *Authority) CheckPeer(ctx context.Context, peer *x509.Certificate) (spiffeid.ID, error) {
	id, _, err := a.peerRecord(ctx, peer)
	return id, err
}

// peerRecord is CheckPeer, also returning the stored record.
func (a *Authority) peerRecord(ctx context.Context, peer *x509.Certificate) (spiffeid.ID, store.Certificate, error) {
	id, err := x509svid.IDFromCert(peer)
	if err != nil {
		return spiffeid.ID{}, store.Certificate{}, newErr(KindForbidden, api.CodeNoIdentity, err, "the client certificate carries no SPIFFE ID")
	}
	if now := a.now(); now.After(peer.NotAfter) {
		return spiffeid.ID{}, store.Certificate{}, newErr(KindForbidden, api.CodeCertExpired, nil, "the client certificate of %s expired at %s; enroll again with a new join token", id, peer.NotAfter.Format(time.RFC3339))
	}
	serial := pki.FormatSerial(peer.SerialNumber)
	rec, err := a.Store.GetCertificate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return spiffeid.ID{}, rec, newErr(KindForbidden, api.CodeCertUnknown, nil, "the client certificate %s of %s is not in this CA's records", serial, id)
	}
	if err != nil {
		return spiffeid.ID{}, rec, classify(err)
	}
	if rec.Revoked() {
		fix := "enroll again with a new join token"
		if pki.KindOf(id) == pki.KindAdmin {
			fix = "issue a new operator identity with `mutual ca admin`"
		}
		return spiffeid.ID{}, rec, newErr(KindForbidden, api.CodeCertRevoked, nil, "the client certificate %s of %s was revoked at %s (%s); %s",
			serial, id, rec.RevokedAt.Format(time.RFC3339), pki.RevocationReasonName(rec.RevocationReason), fix)
	}
	return id, rec, nil
}

// issueRequest is one issuance: what is granted, the CSR that proves
// possession of the key, and what the certificate is recorded with.
type issueRequest struct {
	grant  policy.Grant
	csrPEM []byte
	// ttl is the lifetime asked for; zero means the grant's or the policy default.
	ttl time.Duration
	// requestedBy is who asked, as the issuance log records it.
	requestedBy translog.Requester
	// tokenID is the join token consumed in the issuing transaction, if any.
	tokenID string
	origin
}

// issue is the pipeline every certificate goes through: authorize the CSR
// against policy, build and sign the leaf, then record it (and its log
// entry, and the token it consumes) in one transaction, and only then answer.
func (a *Authority) issue(ctx context.Context, r issueRequest) (*Issued, error) {
	csr, lifetime, err := a.authorize(r)
	if err != nil {
		return nil, err
	}
	now := a.now()
	if lifetime, err = a.partnerLifetime(ctx, r.grant.ID, lifetime, now); err != nil {
		return nil, err
	}
	der, tmpl, issuer, err := a.sign(r.grant, csr.PublicKey, lifetime, now)
	if err != nil {
		return nil, err
	}
	rec, err := a.record(ctx, r, der, tmpl, now)
	if err != nil {
		return nil, err
	}
	a.log().LogAttrs(ctx, slog.LevelInfo, "certificate issued", slog.String("spiffe_id", rec.SPIFFEID), slog.String("serial", rec.Serial),
		slog.Time("not_after", rec.NotAfter), slog.String("requested_by", rec.RequestedBy), slog.Int64("log_index", rec.LogIndex))
	return &Issued{ID: r.grant.ID, DER: der, Serial: rec.Serial, NotBefore: rec.NotBefore, NotAfter: rec.NotAfter,
		Intermediates: a.intermediates(issuer), Roots: a.Roots, LogIndex: rec.LogIndex}, nil
}

// authorize reads the CSR, checks it against the grant and picks the lifetime.
func (a *Authority) authorize(r issueRequest) (*x509.CertificateRequest, time.Duration, error) {
	csr, err := pki.ParseCSR(r.csrPEM)
	if err != nil {
		return nil, 0, newErr(KindInvalid, string(policy.CodeBadCSR), err, "the CSR cannot be read (%v): send a PEM CERTIFICATE REQUEST", err)
	}
	if err := a.Policy.CheckCSR(csr, r.grant); err != nil {
		a.log().Warn("request refused", "spiffe_id", r.grant.ID.String(), "requested_by", r.requestedBy.String(), "reason", err.Error())
		return nil, 0, classify(err)
	}
	lifetime, err := a.Policy.Lifetime(r.ttl, r.grant)
	if err != nil {
		return nil, 0, classify(err)
	}
	return csr, lifetime, nil
}

// sign builds the leaf for grant (with its roles, and pointers to this CA's
// CRL and OCSP) and signs it with the intermediate: it returns the leaf's
// DER, the template it states (serial, validity) and the intermediate.
func (a *Authority) sign(grant policy.Grant, pub crypto.PublicKey, lifetime time.Duration, now time.Time) (der []byte, tmpl, issuer *x509.Certificate, err error) {
	is, crlURL, _, _ := a.signing()
	leaf := pki.Leaf{
		ID: grant.ID, PublicKey: pub, DNSNames: grant.DNSNames,
		IPAddresses: grant.IPAddresses, TTL: lifetime, Now: now,
	}
	if len(grant.Roles) > 0 {
		ext, err := identity.RolesExtension(grant.Roles)
		if err != nil {
			return nil, nil, nil, newErr(KindInvalid, api.CodeBadRole, err, "%v", err)
		}
		leaf.Extensions = []pkix.Extension{ext}
	}
	if crlURL != "" {
		leaf.CRLDistributionPoints = []string{crlURL}
	}
	if a.OCSPURL != "" {
		leaf.OCSPServers = []string{a.OCSPURL}
	}
	der, tmpl, err = is.IssueDER(leaf)
	if err != nil {
		// The cause (a token's name, a module's error) goes to the CA's
		// log, not into an answer that anonymous callers read.
		a.log().Error("cannot sign with the intermediate key: nothing was issued; check its token (present, logged in) or key file", "spiffe_id", grant.ID.String(), "error", err.Error())
		return nil, nil, nil, newErr(KindUnavailable, api.CodeSignFailed, err, "the CA cannot sign right now (its intermediate key did not answer): nothing was issued; retry later (the CA's log says why)")
	}
	return der, tmpl, is.Cert, nil
}

// record stores the certificate der (made from tmpl), consumes the
// request's token and appends the certificate to the issuance log in one
// transaction, which also checks that nothing the request came through was
// revoked meanwhile: no certificate leaves without its log entry.
func (a *Authority) record(ctx context.Context, r issueRequest, der []byte, tmpl *x509.Certificate, now time.Time) (*store.Certificate, error) {
	rec := &store.Certificate{
		Serial: pki.FormatSerial(tmpl.SerialNumber), SPIFFEID: r.grant.ID.String(),
		NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter, IssuedAt: now,
		DER: der, RequestedBy: r.requestedBy.String(), NodeID: r.node, RenewedFrom: r.renewedFrom, EntryID: r.entry,
		Check:    &store.IssueCheck{Presented: r.presented, TokenCreated: r.tokenCreated},
		LogEntry: translog.Entry{Certificate: der, RequestedBy: r.requestedBy, Node: r.node, IssuedAt: now.UTC()}.Marshal(),
	}
	if len(rec.LogEntry) > translog.MaxEntrySize {
		return nil, newErr(KindInvalid, api.CodeTooLarge, nil, "the certificate for %s would be %d bytes in the log, above its %d-byte limit: grant fewer or shorter names", r.grant.ID, len(rec.LogEntry), translog.MaxEntrySize)
	}
	if err := a.Store.RecordIssuance(ctx, rec, r.tokenID, now); err != nil {
		if errors.Is(err, store.ErrRevoked) || errors.Is(err, store.ErrNotGranted) {
			a.log().Warn("request refused", "spiffe_id", r.grant.ID.String(), "requested_by", r.requestedBy.String(), "reason", err.Error())
		}
		return nil, classify(err)
	}
	return rec, nil
}

// RevokeRequest names what to revoke: one serial (and every unexpired
// certificate renewed from it), every unexpired certificate of one
// identity, or a node.
type RevokeRequest struct {
	Serial string
	ID     string
	// Node revokes a node and every workload certificate obtained through it.
	Node   string
	Reason int
}

// Revoke marks certificates revoked; revoking twice is harmless. A revoked
// certificate can no longer renew. Revocations are ordered against
// issuances in the store: once Revoke has returned, no certificate of what
// it named (serial and its renewals, identity, or node and the workload
// certificates obtained through it) issued before it is valid or renewable,
// including those whose issuance was under way while it ran.
func (a *Authority) Revoke(ctx context.Context, by spiffeid.ID, r RevokeRequest) ([]store.Revocation, error) {
	now := a.now()
	var out []store.Revocation
	n := 0
	for _, v := range []string{r.Serial, r.ID, r.Node} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, newErr(KindInvalid, api.CodeBadRequest, nil, "name exactly one of a serial, an identity or a node to revoke")
	}
	switch {
	case r.Serial != "":
		serial, err := NormalizeSerial(r.Serial)
		if err != nil {
			return nil, err
		}
		revs, err := a.Store.RevokeLineage(ctx, serial, r.Reason, now)
		if errors.Is(err, store.ErrNotFound) {
			return nil, newErr(KindNotFound, api.CodeNotFound, err, "certificate %s was not issued by this CA", serial)
		}
		if err != nil {
			return nil, classify(err)
		}
		out = revs
	default:
		raw, what := r.ID, "identity"
		if r.Node != "" {
			raw, what = r.Node, "node"
		}
		id, err := spiffeid.FromString(raw)
		if err != nil {
			return nil, newErr(KindInvalid, string(policy.CodeBadIdentity), err, "%q is not a SPIFFE ID: %v", raw, err)
		}
		var revs []store.Revocation
		if r.Node != "" {
			if err := policy.CheckNodeID(id); err != nil {
				return nil, classify(err)
			}
			revs, err = a.Store.RevokeNode(ctx, id.String(), r.Reason, now)
		} else {
			revs, err = a.Store.RevokeIdentity(ctx, id.String(), r.Reason, now)
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, newErr(KindNotFound, api.CodeNotFound, err, "this CA holds no unexpired certificate of %s %s", what, id)
		}
		if err != nil {
			return nil, classify(err)
		}
		out = revs
	}
	for _, rev := range out {
		a.log().Info("certificate revoked", "serial", rev.Serial, "spiffe_id", rev.SPIFFEID, "reason", pki.RevocationReasonName(r.Reason), "already", rev.AlreadyRevoked, "by", by.String())
		if !rev.AlreadyRevoked && a.OnRevoke != nil {
			a.OnRevoke(rev.Serial)
		}
	}
	return out, nil
}

// ListCertificates returns issued certificates, newest first.
func (a *Authority) ListCertificates(ctx context.Context, f store.CertificateFilter) ([]store.Certificate, error) {
	cs, err := a.Store.ListCertificates(ctx, f)
	return cs, classify(err)
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// Import records a certificate this CA signed outside the API (the admin and
// server certificates of `ca init`), so that it can authenticate and be
// revoked like any other. Importing twice is harmless.
func (a *Authority) Import(ctx context.Context, cert *x509.Certificate, requestedBy translog.Requester) error {
	if a.issuerOf(cert) == nil {
		return fmt.Errorf("import %s: not signed by this CA's intermediate nor by one a rotation retired (issuer %q)", pki.FormatSerial(cert.SerialNumber), cert.Issuer.String())
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return fmt.Errorf("import %s: %w", pki.FormatSerial(cert.SerialNumber), err)
	}
	issued := cert.NotBefore.Add(pki.ClockSkew)
	err = a.Store.RecordIssuance(ctx, &store.Certificate{
		Serial: pki.FormatSerial(cert.SerialNumber), SPIFFEID: id.String(), NotBefore: cert.NotBefore,
		NotAfter: cert.NotAfter, IssuedAt: issued, DER: cert.Raw, RequestedBy: requestedBy.String(),
		LogEntry: translog.Entry{Certificate: cert.Raw, RequestedBy: requestedBy, IssuedAt: issued.UTC()}.Marshal(),
	}, "", a.now())
	if errors.Is(err, store.ErrAlreadyExists) {
		return nil
	}
	return err
}

// replay returns the certificate a used token yielded when csrPEM proves
// possession of that certificate's key, or nil.
func (a *Authority) replay(ctx context.Context, tok store.Token, csrPEM []byte) *Issued {
	if tok.UsedSerial == "" {
		return nil
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil || csr.CheckSignature() != nil {
		return nil
	}
	rec, err := a.Store.GetCertificate(ctx, tok.UsedSerial)
	if err != nil || rec.Revoked() || a.now().After(rec.NotAfter) {
		return nil
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil || !pki.PublicKeysEqual(cert.PublicKey, csr.PublicKey) {
		return nil
	}
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		return nil
	}
	issuer := a.issuerOf(cert)
	if issuer == nil {
		return nil // its intermediate expired: enroll again
	}
	return &Issued{ID: id, DER: cert.Raw, Serial: rec.Serial, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter,
		Intermediates: a.intermediates(issuer), Roots: a.Roots, LogIndex: rec.LogIndex}
}
