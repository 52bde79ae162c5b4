// Package federation provides SPIFFE federation: this trust domain's bundle
// in the SPIFFE bundle format (JWKS with x509-svid keys, spiffe_sequence,
// spiffe_refresh_hint) for the bundle endpoint, the checks every foreign
// bundle passes before it is stored, and the Refresher that fetches each
// federated trust domain's bundle from its endpoint (profiles https_web and
// https_spiffe) on its refresh hint, keeping the last good one.
package federation

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// Bundle endpoint profiles (SPIFFE Trust Domain and Bundle specification,
// section 5.2).
const (
	// ProfileWeb authenticates the endpoint by a Web PKI certificate for
	// its host name.
	ProfileWeb = "https_web"
	// ProfileSPIFFE authenticates the endpoint by its SPIFFE ID, under the
	// foreign bundle held (the first one exchanged out of band).
	ProfileSPIFFE = "https_spiffe"
)

// DefaultRefreshHint is the spiffe_refresh_hint this CA serves, and how
// often a foreign bundle without one is fetched.
const DefaultRefreshHint = 5 * time.Minute

// EndpointPath is where the CA service serves its bundle.
const EndpointPath = "/v1/federation/bundle"

// Fingerprint is the hex SHA-256 of a certificate, as change records name keys.
func Fingerprint(c *x509.Certificate) string {
	fp := pki.Fingerprint(c)
	return hex.EncodeToString(fp[:])
}

// ToStore is b as the store keeps it, set by whom and when: its X.509
// authorities and its JWT authorities (jwt-svid keys, which agents validate
// the trust domain's JWT-SVIDs with), each named in Fingerprints so that
// the change records say which came and went.
func ToStore(b *spiffebundle.Bundle, by string, at time.Time) store.TrustBundle {
	seq, _ := b.SequenceNumber()
	hint, _ := b.RefreshHint()
	var fps []string
	for _, c := range b.X509Authorities() {
		fps = append(fps, Fingerprint(c))
	}
	var jwks string
	if auths := b.JWTAuthorities(); len(auths) > 0 {
		for _, kid := range slices.Sorted(maps.Keys(auths)) {
			fps = append(fps, JWTKeyName(kid, auths[kid]))
		}
		// Marshal fails only on a key type JSON Web Keys cannot carry,
		// which spiffebundle.Parse never yields.
		if doc, err := jwtbundle.FromJWTAuthorities(b.TrustDomain(), auths).Marshal(); err == nil {
			jwks = string(doc)
		}
	}
	return store.TrustBundle{
		TrustDomain: b.TrustDomain().Name(), Sequence: int64(seq), RefreshHint: hint,
		X509AuthoritiesPEM: string(pki.EncodeCertificates(b.X509Authorities()...)), JWTAuthorities: jwks, Fingerprints: fps,
		UpdatedAt: at, UpdatedBy: by,
	}
}

// JWTKeyName names a JWT authority in change records: "jwt:KID:" and the
// hex SHA-256 of its public key (PKIX DER), so that a key ID reused for
// another key is seen as a change.
func JWTKeyName(kid string, key crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return "jwt:" + kid
	}
	sum := sha256.Sum256(der)
	return "jwt:" + kid + ":" + hex.EncodeToString(sum[:])
}

// FromStore is the stored bundle sb as a SPIFFE bundle.
func FromStore(sb store.TrustBundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(sb.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("stored bundle of %q: %w", sb.TrustDomain, err)
	}
	certs, err := pki.ParseCertificates([]byte(sb.X509AuthoritiesPEM))
	if err != nil {
		return nil, fmt.Errorf("stored bundle of %s: %w", sb.TrustDomain, err)
	}
	b := spiffebundle.FromX509Authorities(td, certs)
	if sb.JWTAuthorities != "" {
		jb, err := jwtbundle.Parse(td, []byte(sb.JWTAuthorities))
		if err != nil {
			return nil, fmt.Errorf("stored JWT authorities of %s: %w", sb.TrustDomain, err)
		}
		b.SetJWTAuthorities(jb.JWTAuthorities())
	}
	b.SetSequenceNumber(uint64(sb.Sequence))
	if sb.RefreshHint > 0 {
		b.SetRefreshHint(sb.RefreshHint)
	}
	return b, nil
}

// Parse reads a bundle of td exchanged out of band: a SPIFFE bundle (JSON,
// as a bundle endpoint serves it) or PEM certificates.
func Parse(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	s := strings.TrimSpace(string(data))
	if strings.HasPrefix(s, "{") {
		b, err := spiffebundle.Parse(td, data)
		if err != nil {
			return nil, fmt.Errorf("bundle of %s: %w (want a SPIFFE bundle, as `curl URL` of its bundle endpoint prints, or PEM certificates)", td, err)
		}
		return b, nil
	}
	if block, _ := pem.Decode(data); block == nil {
		return nil, fmt.Errorf("bundle of %s: neither a SPIFFE bundle (JSON) nor PEM certificates", td)
	}
	certs, err := pki.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("bundle of %s: %w", td, err)
	}
	return spiffebundle.FromX509Authorities(td, certs), nil
}

// ErrRefused marks a foreign bundle refused by Check.
var ErrRefused = errors.New("bundle refused")

// Check refuses a foreign bundle that this CA must not trust: one with no
// X.509 authority (it would silently distrust the whole domain), one for
// this CA's own trust domain, one whose authorities name (by SPIFFE ID) a
// trust domain other than its own, or one carrying a root of this CA.
func Check(local spiffeid.TrustDomain, localRoots []*x509.Certificate, b *spiffebundle.Bundle) error {
	td := b.TrustDomain()
	if td == local {
		return fmt.Errorf("%w: %s is this CA's own trust domain: a federated bundle can only be for another one", ErrRefused, td)
	}
	auths := b.X509Authorities()
	if len(auths) == 0 {
		return fmt.Errorf("%w: the bundle of %s holds no X.509 authority; the last good bundle stays", ErrRefused, td)
	}
	for _, c := range auths {
		if !c.IsCA {
			return fmt.Errorf("%w: the bundle of %s holds %q, which is not a CA certificate", ErrRefused, td, c.Subject)
		}
		for _, u := range c.URIs {
			if id, err := spiffeid.FromURI(u); err == nil && id.TrustDomain() != td {
				return fmt.Errorf("%w: an authority in the bundle of %s belongs to %s, not %s", ErrRefused, td, id.TrustDomain(), td)
			}
		}
		for _, r := range localRoots {
			if r.Equal(c) {
				return fmt.Errorf("%w: the bundle of %s holds this CA's own root %q (a bundle for this trust domain)", ErrRefused, td, r.Subject)
			}
		}
	}
	return nil
}

// Local is this trust domain's bundle to serve: its roots, the sequence
// number to publish them under, and DefaultRefreshHint.
func Local(td spiffeid.TrustDomain, roots []*x509.Certificate, sequence int64) *spiffebundle.Bundle {
	b := spiffebundle.FromX509Authorities(td, roots)
	b.SetSequenceNumber(uint64(sequence))
	b.SetRefreshHint(DefaultRefreshHint)
	return b
}
