package client

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/token"
)

// ServersFile, in an identity directory, remembers the CA addresses to
// renew at: identity.CAURLsFile.
const ServersFile = identity.CAURLsFile

// SaveCAURLs records in dir where the identity renews: identity.WriteCAURLs.
// Writers of a whole identity pass identity.WriteOptions.CAURLs instead.
func SaveCAURLs(dir string, urls []string) error { return identity.WriteCAURLs(dir, urls) }

// LoadCAURLs reads the CA addresses recorded in dir; none is not an error:
// identity.ReadCAURLs.
func LoadCAURLs(dir string) ([]string, error) { return identity.ReadCAURLs(dir) }

// newCSR makes a certificate request for key with no names: the CA takes
// the identity from the grant.
func newCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("make certificate request: %w", err)
	}
	return pki.EncodeCSR(der), nil
}

// Enrollment is the outcome of RequestIdentity.
type Enrollment struct {
	Identity *identity.Identity
	// CAURLs are where the identity renews.
	CAURLs []string
	// ClockOffset is how far the CA's clock was ahead of ours when it
	// answered (negative: behind).
	ClockOffset time.Duration
	// Warning, when not empty, says in one sentence why the certificate
	// may not work here although the CA issued it correctly: this
	// machine's clock is off.
	Warning string
	// pendingKey is the file that kept the key while the request was in
	// flight; Done removes it.
	pendingKey string
}

// Done removes the key kept for a retry of the enrollment (RequestOptions.
// KeepKeyIn): call it once the identity is saved.
func (e *Enrollment) Done() error {
	if e.pendingKey == "" {
		return nil
	}
	if err := os.Remove(e.pendingKey); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// RequestOptions configure RequestIdentityWith. Zero values are defaults.
type RequestOptions struct {
	// KeyType of the key made; empty means ECDSA P-256.
	KeyType pki.KeyType
	// TTL asks for a shorter lifetime than the token grants; zero: the grant's.
	TTL time.Duration
	// KeepKeyIn, when set, is a directory where the key is kept (0600,
	// .pending-TOKENID.key) from before the token is sent until Done: a
	// re-run with the same token after a lost or refused answer uses the
	// same key, and the CA answers it the certificate it already issued
	// instead of refusing a used token.
	KeepKeyIn string
	// Now is this machine's clock; nil means time.Now.
	Now func() time.Time
}

// PendingKeyFile is where RequestOptions.KeepKeyIn keeps the key of an
// enrollment with token id tokenID.
func PendingKeyFile(dir, tokenID string) string {
	return filepath.Join(dir, ".pending-"+tokenID+".key")
}

// RequestIdentity enrolls with a join token: it pins the CA's root by the
// token's fingerprint, makes a key of keyType locally, and returns the
// identity the CA issued, checked against the pinned root.
func RequestIdentity(ctx context.Context, tokenString string, keyType pki.KeyType, ttl time.Duration) (*Enrollment, error) {
	return RequestIdentityWith(ctx, tokenString, RequestOptions{KeyType: keyType, TTL: ttl})
}

// RequestIdentityWith is RequestIdentity with options. The answer is checked
// against the CA's clock (it says its time), so a machine whose clock is
// off still gets the certificate its token paid for; Enrollment.Warning then
// says by how much the clocks differ.
func RequestIdentityWith(ctx context.Context, tokenString string, o RequestOptions) (*Enrollment, error) {
	if o.KeyType == "" {
		o.KeyType = pki.KeyECDSAP256
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	t, err := token.Parse(tokenString)
	if err != nil {
		return nil, err
	}
	var root *x509.Certificate
	var serverID spiffeid.ID
	var errs []error
	for _, u := range t.CAURLs {
		if root, serverID, err = fetchRoot(ctx, u, t.RootFingerprint); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if root == nil {
		return nil, errors.Join(errs...)
	}
	key, pending, err := enrollmentKey(o, t.ID)
	if err != nil {
		return nil, err
	}
	csr, err := newCSR(key)
	if err != nil {
		return nil, err
	}
	c, err := New(t.CAURLs, []*x509.Certificate{root}, nil, WithServerID(serverID), WithClock(o.Now))
	if err != nil {
		return nil, err
	}
	defer c.CloseIdleConnections()
	resp, localAt, err := c.issue(ctx, "/v1/enroll", api.EnrollRequest{Token: tokenString, CSR: string(csr), TTL: api.Duration(o.TTL)})
	if err != nil {
		if pending != "" {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Unavailable() {
				err = fmt.Errorf("%w (the key is kept in %s: run the same command again with the same token to get the certificate the CA may have issued)", err, pending)
			} else {
				// A refusal: no certificate exists for this key, and the
				// token will not give one to it.
				os.Remove(pending)
			}
		}
		return nil, err
	}
	id, offset, warning, err := checkIssued(resp, key, []*x509.Certificate{root}, localAt)
	if err != nil {
		return nil, err
	}
	c.withFederated(ctx, id, nil)
	return &Enrollment{Identity: id, CAURLs: t.CAURLs, ClockOffset: offset, Warning: warning, pendingKey: pending}, nil
}

// Federated is what the CA holds of the trust domains it federates with.
type Federated struct {
	// Roots are each trust domain's X.509 authorities.
	Roots map[spiffeid.TrustDomain][]*x509.Certificate
	// JWT are the JWT authorities of each trust domain that publishes any.
	JWT map[spiffeid.TrustDomain]*jwtbundle.Bundle
	// Bad names the bundles left out: a name that is no trust domain, the
	// caller's own, no certificate, or JWT authorities that do not parse.
	Bad []string
}

// FederatedBundles asks the CA (/v1/bundle) for the bundles of each trust
// domain it federates with; own's is never among them.
func (c *Client) FederatedBundles(ctx context.Context, own spiffeid.TrustDomain) (*Federated, error) {
	resp, err := c.Bundle(ctx)
	if err != nil {
		return nil, err
	}
	return ParseFederated(resp, own), nil
}

// ParseFederated reads the federated bundles of a /v1/bundle answer (or a
// copy of it kept on disk), leaving out own's and any it cannot use.
func ParseFederated(resp *api.BundleResponse, own spiffeid.TrustDomain) *Federated {
	out := &Federated{}
	for name, rootsPEM := range resp.FederatedBundles {
		td, err := spiffeid.TrustDomainFromString(name)
		roots, perr := pki.ParseCertificates([]byte(rootsPEM))
		if err != nil || perr != nil || td == own || len(roots) == 0 {
			out.Bad = append(out.Bad, name)
			continue
		}
		if out.Roots == nil {
			out.Roots = map[spiffeid.TrustDomain][]*x509.Certificate{}
		}
		out.Roots[td] = roots
		jwks, ok := resp.FederatedJWTBundles[name]
		if !ok {
			continue
		}
		jb, err := jwtbundle.Parse(td, []byte(jwks))
		if err != nil {
			out.Bad = append(out.Bad, name+" (JWT authorities)")
			continue
		}
		if out.JWT == nil {
			out.JWT = map[spiffeid.TrustDomain]*jwtbundle.Bundle{}
		}
		out.JWT[td] = jb
	}
	return out
}

// withFederated sets id.Federated to the CA's federated bundles, for the
// identity directory written next; when the CA cannot say, to keep (the
// bundles the directory held), so that a renewal never drops them.
func (c *Client) withFederated(ctx context.Context, id *identity.Identity, keep map[spiffeid.TrustDomain][]*x509.Certificate) {
	fed, err := c.FederatedBundles(ctx, id.ID.TrustDomain())
	if err != nil {
		id.Federated = keep
		return
	}
	id.Federated = fed.Roots
}

// enrollmentKey makes the key of an enrollment, or takes the one kept by an
// earlier run with the same token; with o.KeepKeyIn it is written before
// the token is sent.
func enrollmentKey(o RequestOptions, tokenID string) (crypto.Signer, string, error) {
	if o.KeepKeyIn == "" {
		key, err := pki.GenerateKey(o.KeyType, nil)
		return key, "", err
	}
	path := PendingKeyFile(o.KeepKeyIn, tokenID)
	if b, err := os.ReadFile(path); err == nil {
		key, err := pki.ParsePrivateKey(b, nil)
		if err != nil {
			return nil, "", fmt.Errorf("%s, the key kept by an earlier run with this token: %w; remove it to start over", path, err)
		}
		return key, path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	key, err := pki.GenerateKey(o.KeyType, nil)
	if err != nil {
		return nil, "", err
	}
	pemKey, err := pki.MarshalPrivateKey(key, nil, 0)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(o.KeepKeyIn, 0o700); err != nil {
		return nil, "", err
	}
	if err := atomicfile.WriteFile(path, pemKey, 0o600); err != nil {
		return nil, "", fmt.Errorf("keep the key for a retry: %w", err)
	}
	return key, path, nil
}

// RenewOptions configure RenewIdentityWith. Zero values are defaults.
type RenewOptions struct {
	// KeyType of the new key; empty means the same type as the current key.
	KeyType pki.KeyType
	// TTL asks for a shorter lifetime; zero: as the current certificate.
	TTL time.Duration
	// Now is this machine's clock; nil means time.Now.
	Now func() time.Time
}

// Renewal is the outcome of RenewIdentityWith.
type Renewal struct {
	Identity *identity.Identity
	// ClockOffset and Warning are as in Enrollment.
	ClockOffset time.Duration
	Warning     string
}

// RenewIdentity renews cur over mTLS at the CA addresses given, with a fresh
// key of keyType (empty: the same type as the current key).
func RenewIdentity(ctx context.Context, cur *identity.Identity, urls []string, keyType pki.KeyType, ttl time.Duration) (*identity.Identity, error) {
	r, err := RenewIdentityWith(ctx, cur, urls, RenewOptions{KeyType: keyType, TTL: ttl})
	if err != nil {
		return nil, err
	}
	return r.Identity, nil
}

// RenewIdentityWith is RenewIdentity with options. The current certificate
// is judged expired by the CA's clock, not only ours: when this machine's
// clock says expired but the CA's does not, the renewal goes ahead and the
// Warning says why; when the CA refuses the certificate because its own
// clock is off, the error says by how much.
func RenewIdentityWith(ctx context.Context, cur *identity.Identity, urls []string, o RenewOptions) (*Renewal, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	keyType := o.KeyType
	if keyType == "" {
		keyType = keyTypeOf(cur.Key)
	}
	tc := cur.TLSCertificate()
	c, err := New(urls, cur.Roots, &tc, WithClock(o.Now))
	if err != nil {
		return nil, err
	}
	defer c.CloseIdleConnections()
	leaf := cur.Leaf()
	if now := o.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		// Expired (or not yet valid) by our clock: ask the CA's.
		caNow, localAt, terr := c.ServerTime(ctx)
		if terr != nil || caNow.After(leaf.NotAfter) {
			if terr == nil && caNow.Sub(localAt).Abs() > pki.ClockSkew {
				return nil, fmt.Errorf("%w (and %s)", &identity.ExpiredError{Path: cur.ID.String(), NotAfter: leaf.NotAfter}, DescribeOffset(caNow.Sub(localAt)))
			}
			return nil, &identity.ExpiredError{Path: cur.ID.String(), NotAfter: leaf.NotAfter}
		}
	}
	key, err := pki.GenerateKey(keyType, nil)
	if err != nil {
		return nil, err
	}
	csr, err := newCSR(key)
	if err != nil {
		return nil, err
	}
	resp, localAt, err := c.issue(ctx, "/v1/renew", api.RenewRequest{CSR: string(csr), TTL: api.Duration(o.TTL)})
	if err != nil {
		return nil, err
	}
	id, offset, warning, err := checkIssued(resp, key, cur.Roots, localAt)
	if err != nil {
		return nil, err
	}
	c.withFederated(ctx, id, cur.Federated)
	return &Renewal{Identity: id, ClockOffset: offset, Warning: warning}, nil
}

// explainRefusal adds to a refused request with a client certificate (a
// renewal, an admin or node call) the reason when it is the CA's clock: the CA judges our certificate by its own time, and a CA whose
// clock is off refuses a good certificate as expired or not yet valid (over
// TLS, often only as a broken connection).
func (c *Client) explainRefusal(ctx context.Context, leaf *x509.Certificate, err error) error {
	var ae *APIError
	var nc *NotCAError
	switch {
	case errors.As(err, &nc) || ctx.Err() != nil:
		return err
	case errors.As(err, &ae):
		if ae.Code != api.CodeCertExpired {
			return err
		}
	case !refusedInHandshake(err):
		return err
	}
	caNow, localAt, terr := c.ServerTime(ctx)
	if terr != nil {
		return err
	}
	off := caNow.Sub(localAt)
	if off.Abs() <= pki.ClockSkew {
		return err
	}
	switch {
	case caNow.Before(leaf.NotBefore):
		return fmt.Errorf("%w: %s, so by the CA's clock this certificate is not valid until %s; fix the clock that is wrong (NTP) and retry",
			err, DescribeOffset(off), leaf.NotBefore.UTC().Format(time.RFC3339))
	case caNow.After(leaf.NotAfter):
		return fmt.Errorf("%w: %s, so by the CA's clock this certificate expired at %s; fix the clock that is wrong (NTP), or enroll again with a new token",
			err, DescribeOffset(off), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("%w (%s)", err, DescribeOffset(off))
}

// refusedInHandshake reports whether err is how a TLS server's refusal of
// our certificate reaches us: a remote alert about a certificate ("bad",
// "expired", "unknown", "required"; crypto/tls exposes remote alerts over
// TCP only as a net.OpError "remote error"), or, when the refusal raced our
// request, a broken or reset connection. Over HTTP/2 the alert can also
// arrive while the transport reads the server's preface, and net/http then
// reports only that the connection "could not be established", dropping the
// alert (which one a request sees depends on timing); that counts too, since
// asking the CA's clock costs one anonymous request and adds words only when
// the clocks disagree.
func refusedInHandshake(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return strings.Contains(op.Err.Error(), "certificate")
	}
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "http2: client conn could not be established")
}

// DescribeOffset says in words how this machine's clock compares with the
// CA's, given the CA's clock minus ours: "your clock is 7200 seconds behind
// the CA's".
func DescribeOffset(off time.Duration) string {
	secs := int64(math.Round(off.Seconds()))
	switch {
	case secs > 0:
		return fmt.Sprintf("your clock is %d seconds behind the CA's", secs)
	case secs < 0:
		return fmt.Sprintf("your clock is %d seconds ahead of the CA's", -secs)
	}
	return "your clock agrees with the CA's"
}

func keyTypeOf(k crypto.Signer) pki.KeyType {
	switch pki.KeyDescription(k.Public()) {
	case "ECDSA P-384":
		return pki.KeyECDSAP384
	case "Ed25519":
		return pki.KeyEd25519
	case "RSA 3072":
		return pki.KeyRSA3072
	}
	return pki.KeyECDSAP256
}

// checkIssued verifies what the CA returned before anything is written: the
// chain parses, holds our key, and verifies to the trusted roots at the
// CA's time (resp.ServerTime; our clock, localAt, when the CA gave none).
// It returns how far the CA's clock is ahead of ours and, when the
// certificate is not valid by our clock or the clocks differ by more than
// pki.ClockSkew, a warning that says so.
func checkIssued(resp *api.IssueResponse, key crypto.Signer, trusted []*x509.Certificate, localAt time.Time) (*identity.Identity, time.Duration, string, error) {
	at := resp.ServerTime
	if at.IsZero() {
		at = localAt
	}
	offset := at.Sub(localAt)
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		return nil, 0, "", fmt.Errorf("the CA's answer: chain: %w", err)
	}
	roots, err := pki.ParseCertificates([]byte(resp.RootsPEM))
	if err != nil {
		return nil, 0, "", fmt.Errorf("the CA's answer: roots: %w", err)
	}
	if !pki.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, 0, "", errors.New("the CA returned a certificate for another key")
	}
	if _, err := pki.VerifyChain(chain, trusted, at, x509.ExtKeyUsageAny); err != nil {
		return nil, 0, "", fmt.Errorf("the certificate the CA returned does not verify against the trusted roots at the CA's time %s: %w", at.UTC().Format(time.RFC3339), err)
	}
	sid, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, 0, "", fmt.Errorf("the certificate the CA returned has no SPIFFE ID: %w", err)
	}
	leaf := chain[0]
	var warning string
	switch {
	case localAt.Before(leaf.NotBefore):
		warning = fmt.Sprintf("%s: by this machine's clock the certificate is not valid until %s; programs here that check it will refuse it until the clock is fixed (NTP)",
			DescribeOffset(offset), leaf.NotBefore.UTC().Format(time.RFC3339))
	case localAt.After(leaf.NotAfter):
		warning = fmt.Sprintf("%s: by this machine's clock the certificate already expired at %s; programs here that check it will refuse it until the clock is fixed (NTP)",
			DescribeOffset(offset), leaf.NotAfter.UTC().Format(time.RFC3339))
	case offset.Abs() > pki.ClockSkew:
		warning = DescribeOffset(offset) + "; fix the clock that is wrong (NTP) before certificates stop working"
	}
	return &identity.Identity{ID: sid, Chain: chain, Key: key, Roots: roots}, offset, warning, nil
}
