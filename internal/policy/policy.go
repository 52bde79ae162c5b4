// Package policy decides what the CA may issue. Every rule lives here, so that
// what a certificate can look like is read in one place: the identity comes
// from the grant (a join token or the renewing certificate), never from the
// CSR; the CSR only proves possession of a strong key.
package policy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Code names the rule a refused request broke, for programs (the API's
// "code" field) and tests.
type Code string

// Refusal codes; their spelling is owned by package api, which lists every
// code the CA API answers with.
const (
	CodeBadCSR             Code = api.CodeBadCSR
	CodeCSRSignature       Code = api.CodeCSRSignature
	CodeWeakKey            Code = api.CodeWeakKey
	CodeCARequested        Code = api.CodeCARequested
	CodeForeignTrustDomain Code = api.CodeForeignTrustDomain
	CodeIdentityMismatch   Code = api.CodeIdentityMismatch
	CodeNameNotGranted     Code = api.CodeNameNotGranted
	CodeLifetime           Code = api.CodeLifetime
	CodeBadIdentity        Code = api.CodeBadIdentity
	// CodeReservedIdentity refuses an identity that this way of granting
	// may not give: the CA's own ID, an operator or node through an entry...
	CodeReservedIdentity Code = api.CodeReservedIdentity
	// CodeBadName refuses a malformed DNS name or IP address, or too many.
	CodeBadName Code = api.CodeBadName
	// CodeBadRole refuses a role that is not one short word.
	CodeBadRole Code = api.CodeBadRole
	// CodeBadNode refuses a node that is not spiffe://TD/node/NAME (or a
	// pattern of it).
	CodeBadNode Code = api.CodeBadNode
)

// RefusedError is a request the policy turned down, with the rule and a
// sentence that says what to change.
type RefusedError struct {
	Code   Code
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

func refuse(c Code, format string, a ...any) error {
	return &RefusedError{Code: c, Reason: fmt.Sprintf(format, a...)}
}

// Policy holds the limits of one CA. The zero value is not usable; see New.
type Policy struct {
	// TrustDomain is the only trust domain the CA issues in.
	TrustDomain spiffeid.TrustDomain
	// DefaultTTL is the certificate lifetime when neither grant nor request names one.
	DefaultTTL time.Duration
	// MaxTTL is the longest certificate lifetime.
	MaxTTL time.Duration
	// MaxTokenTTL is the longest a join token may stay valid.
	MaxTokenTTL time.Duration
}

// Grant is what the requester is entitled to: the identity and names bound to
// its token, or carried by the certificate it renews.
type Grant struct {
	ID          spiffeid.ID
	DNSNames    []string
	IPAddresses []net.IP
	// TTL is the lifetime granted; zero means the policy default.
	TTL time.Duration
	// Roles are carried in the certificate's roles extension.
	Roles []string
	// Via says how the identity was granted; the zero value is the most
	// restrictive, a registration entry.
	Via Via
}

// Via is how an identity is granted to a requester.
type Via int

// The ways of granting an identity.
const (
	// ViaEntry: a registration entry, through a node agent. Workload (and
	// partner) identities only.
	ViaEntry Via = iota
	// ViaToken: a join token. Workloads and nodes; never an operator (they
	// come from `mutual ca admin`) nor the CA's own ID.
	ViaToken
	// ViaRenewal: the certificate being renewed, which already holds the
	// identity. Anything but the CA's own ID (the CA service renews its
	// certificate itself).
	ViaRenewal
)

// String names the way of granting in refusals: "a join token".
func (v Via) String() string {
	switch v {
	case ViaToken:
		return "a join token"
	case ViaRenewal:
		return "renewal"
	}
	return "a registration entry"
}

// CheckGrantable refuses an identity that cannot be granted the way via
// says, by its kind (pki.KindOf): the CA server's ID and the other names
// reserved under /mutual/ never; operators (/admin/) only by renewal of an
// operator certificate; nodes (/node/) by a token or renewal, never by an
// entry. This is what stops a workload from posing as the CA or an operator.
func (p *Policy) CheckGrantable(id spiffeid.ID, via Via) error {
	k := pki.KindOf(id)
	ok := false
	switch k {
	case pki.KindWorkload, pki.KindPartner:
		ok = true
	case pki.KindNode:
		ok = via == ViaToken || via == ViaRenewal
	case pki.KindAdmin:
		ok = via == ViaRenewal
	}
	if ok {
		return nil
	}
	fix := "choose a workload identity such as spiffe://" + p.TrustDomain.Name() + "/ns/prod/web"
	switch k {
	case pki.KindAdmin:
		fix = "operator identities are issued by `mutual ca admin` on the CA's machine"
	case pki.KindNode:
		fix = "node identities are granted by a join token (`mutual token create --identity " + id.String() + "`)"
	case pki.KindServer, pki.KindReserved:
		fix = "that name is reserved for the CA service itself; " + fix
	}
	return refuse(CodeReservedIdentity, "%s is a %s identity, which cannot be granted through %s: %s", id, k, via, fix)
}

// CheckIdentity accepts a SPIFFE ID the CA may issue: in its trust domain and
// with a path.
func (p *Policy) CheckIdentity(id spiffeid.ID) error {
	if id.IsZero() {
		return refuse(CodeBadIdentity, "no SPIFFE ID given")
	}
	if id.TrustDomain() != p.TrustDomain {
		return refuse(CodeForeignTrustDomain, "%s is in trust domain %q, but this CA serves %q", id, id.TrustDomain().Name(), p.TrustDomain.Name())
	}
	if id.Path() == "" {
		return refuse(CodeBadIdentity, "%s has no path: a workload identity looks like spiffe://%s/ns/prod/web", id, p.TrustDomain.Name())
	}
	return nil
}

// ParseID parses a SPIFFE ID and checks it with CheckIdentity.
func (p *Policy) ParseID(s string) (spiffeid.ID, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, refuse(CodeBadIdentity, "%q is not a SPIFFE ID (%v): write spiffe://%s/PATH", s, err, p.TrustDomain.Name())
	}
	return id, p.CheckIdentity(id)
}

// Lifetime picks the certificate lifetime: the request's if given, else the
// grant's, else the default; refusing anything above the grant or the
// policy maximum.
func (p *Policy) Lifetime(requested time.Duration, g Grant) (time.Duration, error) {
	limit := p.MaxTTL
	if g.TTL > 0 && g.TTL < limit {
		limit = g.TTL
	}
	switch {
	case requested < 0:
		return 0, refuse(CodeLifetime, "a lifetime of %s is negative", requested)
	case requested > p.MaxTTL:
		return 0, refuse(CodeLifetime, "a lifetime of %s exceeds the policy maximum of %s; ask for %s or less", requested, p.MaxTTL, p.MaxTTL)
	case requested > limit:
		return 0, refuse(CodeLifetime, "a lifetime of %s exceeds the %s this grant allows", requested, limit)
	case requested > 0:
		return requested, nil
	case g.TTL > 0:
		return min(g.TTL, p.MaxTTL), nil
	}
	return min(p.DefaultTTL, p.MaxTTL), nil
}

// CheckTokenGrant checks the terms of a join token before it is created.
func (p *Policy) CheckTokenGrant(g Grant, tokenTTL time.Duration) error {
	if err := p.CheckIdentity(g.ID); err != nil {
		return err
	}
	if err := p.CheckGrantable(g.ID, ViaToken); err != nil {
		return err
	}
	if tokenTTL <= 0 {
		return refuse(CodeLifetime, "a token lifetime must be positive")
	}
	if tokenTTL > p.MaxTokenTTL {
		return refuse(CodeLifetime, "a token lifetime of %s exceeds the policy maximum of %s", tokenTTL, p.MaxTokenTTL)
	}
	return p.checkCertTTL(g.TTL)
}

// checkCertTTL accepts the certificate lifetime a token or an entry
// grants: zero (the policy default) up to the policy maximum.
func (p *Policy) checkCertTTL(ttl time.Duration) error {
	if ttl > p.MaxTTL {
		return refuse(CodeLifetime, "a certificate lifetime of %s exceeds the policy maximum of %s", ttl, p.MaxTTL)
	}
	if ttl < 0 {
		return refuse(CodeLifetime, "a certificate lifetime of %s is negative", ttl)
	}
	return nil
}

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
)

// CheckCSR accepts a certificate request for grant g: the grant's identity
// must be one its way of granting may give (CheckGrantable, checked again at
// issuance for grants stored before a rule existed), the CSR's signature
// must verify, its key must be strong, it must not ask for CA rights, and any
// identity or name it lists must be one the grant gives.
func (p *Policy) CheckCSR(csr *x509.CertificateRequest, g Grant) error {
	if err := p.CheckIdentity(g.ID); err != nil {
		return err
	}
	if err := p.CheckGrantable(g.ID, g.Via); err != nil {
		return err
	}
	if err := csr.CheckSignature(); err != nil {
		return refuse(CodeCSRSignature, "the CSR's signature does not verify (%v): sign the request with the key it contains", err)
	}
	if err := CheckKey(csr.PublicKey); err != nil {
		return err
	}
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA bool `asn1:"optional"`
				Max  int  `asn1:"optional,default:-1"`
			}
			if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil {
				return refuse(CodeBadCSR, "the CSR's basicConstraints extension is malformed")
			}
			if bc.IsCA {
				return refuse(CodeCARequested, "the CSR asks for CA rights (basicConstraints cA=true); leaf certificates cannot sign others")
			}
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if _, err := asn1.Unmarshal(ext.Value, &bits); err != nil {
				return refuse(CodeBadCSR, "the CSR's keyUsage extension is malformed")
			}
			// keyCertSign is bit 5, cRLSign bit 6.
			if bits.At(5) == 1 || bits.At(6) == 1 {
				return refuse(CodeCARequested, "the CSR asks for certificate or CRL signing key usage; leaf certificates cannot sign others")
			}
		}
	}
	for _, u := range csr.URIs {
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return refuse(CodeIdentityMismatch, "the CSR names URI %q, which is not a SPIFFE ID; leave URIs out, the identity comes from the grant", u)
		}
		if id.TrustDomain() != p.TrustDomain {
			return refuse(CodeForeignTrustDomain, "the CSR asks for %s, in trust domain %q, but this CA serves %q", id, id.TrustDomain().Name(), p.TrustDomain.Name())
		}
		if id != g.ID {
			return refuse(CodeIdentityMismatch, "the CSR asks for %s but the grant is for %s; leave URIs out, the identity comes from the grant", id, g.ID)
		}
	}
	for _, name := range csr.DNSNames {
		if !slices.Contains(g.DNSNames, strings.ToLower(name)) {
			return refuse(CodeNameNotGranted, "the CSR asks for DNS name %q, which the grant for %s does not include (granted: %s)", name, g.ID, listOrNone(g.DNSNames))
		}
	}
	for _, ip := range csr.IPAddresses {
		if !slices.ContainsFunc(g.IPAddresses, ip.Equal) {
			return refuse(CodeNameNotGranted, "the CSR asks for IP address %s, which the grant for %s does not include", ip, g.ID)
		}
	}
	if len(csr.EmailAddresses) > 0 {
		return refuse(CodeNameNotGranted, "the CSR asks for e-mail addresses; mutual issues SPIFFE identities only")
	}
	return nil
}

// CheckKey accepts RSA of 2048 to 8192 bits, ECDSA on P-256, P-384 or P-521,
// and Ed25519.
func CheckKey(pub any) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 {
			return refuse(CodeWeakKey, "an RSA key of %d bits is too weak: use at least 2048 bits, or ECDSA P-256", n)
		} else if n > 8192 {
			return refuse(CodeWeakKey, "an RSA key of %d bits is larger than the 8192 this CA accepts", n)
		}
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return refuse(CodeWeakKey, "the ECDSA curve %s is not accepted: use P-256, P-384 or P-521", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	}
	return refuse(CodeWeakKey, "the key type %T is not accepted: use ECDSA P-256, P-384, Ed25519 or RSA (2048 bits or more)", pub)
}

func listOrNone(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ", ")
}
