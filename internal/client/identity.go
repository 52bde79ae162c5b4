package client

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/token"
)

// ServersFile, in an identity directory, remembers the CA addresses to renew at.
const ServersFile = "mutual.json"

type serversFile struct {
	CAURLs []string `json:"ca_urls"`
}

// SaveCAURLs records in dir where the identity renews.
func SaveCAURLs(dir string, urls []string) error {
	return atomicfile.WriteFile(filepath.Join(dir, ServersFile), MarshalCAURLs(urls), 0o644)
}

// MarshalCAURLs is the content of ServersFile for urls, for writers that
// put it in place themselves (the agent's --write).
func MarshalCAURLs(urls []string) []byte {
	b, _ := json.MarshalIndent(serversFile{CAURLs: urls}, "", "  ")
	return append(b, '\n')
}

// LoadCAURLs reads the CA addresses recorded in dir; none is not an error.
func LoadCAURLs(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, ServersFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f serversFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ServersFile), err)
	}
	return f.CAURLs, nil
}

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
}

// RequestIdentity enrolls with a join token: it pins the CA's root by the
// token's fingerprint, makes a key of keyType locally, and returns the
// identity the CA issued, checked against the pinned root.
func RequestIdentity(ctx context.Context, tokenString string, keyType pki.KeyType, ttl time.Duration) (*Enrollment, error) {
	t, err := token.Parse(tokenString)
	if err != nil {
		return nil, err
	}
	var root *x509.Certificate
	var errs []error
	for _, u := range t.CAURLs {
		if root, err = FetchRoot(ctx, u, t.RootFingerprint); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if root == nil {
		return nil, errors.Join(errs...)
	}
	key, err := pki.GenerateKey(keyType, nil)
	if err != nil {
		return nil, err
	}
	csr, err := newCSR(key)
	if err != nil {
		return nil, err
	}
	c, err := New(t.CAURLs, []*x509.Certificate{root}, nil)
	if err != nil {
		return nil, err
	}
	defer c.CloseIdleConnections()
	resp, err := c.Enroll(ctx, api.EnrollRequest{Token: tokenString, CSR: string(csr), TTL: api.Duration(ttl)})
	if err != nil {
		return nil, err
	}
	id, err := checkIssued(resp, key, []*x509.Certificate{root})
	if err != nil {
		return nil, err
	}
	return &Enrollment{Identity: id, CAURLs: t.CAURLs}, nil
}

// RenewIdentity renews cur over mTLS at the CA addresses given, with a fresh
// key of keyType (empty: the same type as the current key).
func RenewIdentity(ctx context.Context, cur *identity.Identity, urls []string, keyType pki.KeyType, ttl time.Duration) (*identity.Identity, error) {
	if now := time.Now(); now.After(cur.Leaf().NotAfter) {
		return nil, &identity.ExpiredError{Path: cur.ID.String(), NotAfter: cur.Leaf().NotAfter}
	}
	if keyType == "" {
		keyType = keyTypeOf(cur.Key)
	}
	key, err := pki.GenerateKey(keyType, nil)
	if err != nil {
		return nil, err
	}
	csr, err := newCSR(key)
	if err != nil {
		return nil, err
	}
	tc := cur.TLSCertificate()
	c, err := New(urls, cur.Roots, &tc)
	if err != nil {
		return nil, err
	}
	defer c.CloseIdleConnections()
	resp, err := c.Renew(ctx, api.RenewRequest{CSR: string(csr), TTL: api.Duration(ttl)})
	if err != nil {
		return nil, err
	}
	return checkIssued(resp, key, cur.Roots)
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
// chain parses, holds our key, and verifies to the trusted roots.
func checkIssued(resp *api.IssueResponse, key crypto.Signer, trusted []*x509.Certificate) (*identity.Identity, error) {
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		return nil, fmt.Errorf("the CA's answer: chain: %w", err)
	}
	roots, err := pki.ParseCertificates([]byte(resp.RootsPEM))
	if err != nil {
		return nil, fmt.Errorf("the CA's answer: roots: %w", err)
	}
	if !pki.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, errors.New("the CA returned a certificate for another key")
	}
	pool := x509.NewCertPool()
	for _, r := range trusted {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the certificate the CA returned does not verify against the trusted roots: %w", err)
	}
	sid, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("the certificate the CA returned has no SPIFFE ID: %w", err)
	}
	return &identity.Identity{ID: sid, Chain: chain, Key: key, Roots: roots}, nil
}
