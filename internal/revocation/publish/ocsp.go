package publish

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	_ "crypto/sha1" // SHA-1 is how most OCSP clients name the issuer
	_ "crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
)

// OCSPStore is what the responder reads.
type OCSPStore interface {
	GetCertificate(ctx context.Context, serial string) (store.Certificate, error)
}

// OCSPValidity is how long an answer is valid (nextUpdate - thisUpdate).
const OCSPValidity = time.Hour

// responderTTL is the delegated responder certificate's lifetime.
const responderTTL = 7 * 24 * time.Hour

var oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}

// Responder answers OCSP requests (RFC 6960) for certificates of one
// issuing CA, signing with a delegated responder certificate, and caches
// each answer until a revocation or half its validity.
type Responder struct {
	issuer *pki.Issuer
	store  OCSPStore
	now    func() time.Time
	// fixed, when set, is the responder key (kept in a token): each
	// responder certificate certifies it anew. Nil: a fresh in-memory
	// key per responder certificate.
	fixed crypto.Signer

	issuerNameHash map[crypto.Hash][]byte
	issuerKeyHash  map[crypto.Hash][]byte

	mu    sync.RWMutex
	cert  *x509.Certificate
	key   crypto.Signer
	cache map[string]cached
	gen   uint64 // bumped by Invalidate, so a stale answer is not cached
}

type cached struct {
	der     []byte
	expires time.Time
}

// NewResponder makes a responder for issuer; it issues its own delegated
// responder certificate (OCSPSigning, id-pkix-ocsp-nocheck).
func NewResponder(issuer *pki.Issuer, st OCSPStore, now func() time.Time) (*Responder, error) {
	return NewKeyedResponder(issuer, nil, st, now)
}

// NewKeyedResponder is NewResponder signing with key (a token's, say):
// each responder certificate the issuer makes certifies key's public key.
// A nil key means a fresh in-memory key per responder certificate.
func NewKeyedResponder(issuer *pki.Issuer, key crypto.Signer, st OCSPStore, now func() time.Time) (*Responder, error) {
	if now == nil {
		now = time.Now
	}
	r := &Responder{issuer: issuer, store: st, now: now, fixed: key, cache: map[string]cached{},
		issuerNameHash: map[crypto.Hash][]byte{}, issuerKeyHash: map[crypto.Hash][]byte{}}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.Cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, err
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		hn := h.New()
		hn.Write(issuer.Cert.RawSubject)
		r.issuerNameHash[h] = hn.Sum(nil)
		hk := h.New()
		hk.Write(spki.PublicKey.RightAlign())
		r.issuerKeyHash[h] = hk.Sum(nil)
	}
	if err := r.rotate(); err != nil {
		return nil, err
	}
	return r, nil
}

// rotate issues a fresh responder certificate, for a fresh key unless the
// responder's key is fixed.
func (r *Responder) rotate() error {
	key := r.fixed
	if key == nil {
		var err error
		if key, err = pki.GenerateKey(pki.KeyECDSAP256, nil); err != nil {
			return err
		}
	}
	serial, err := pki.NewSerial(nil)
	if err != nil {
		return err
	}
	now := r.now()
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{Organization: r.issuer.Cert.Subject.Organization, CommonName: r.issuer.Cert.Subject.CommonName + " OCSP responder"},
		NotBefore:       now.Add(-pki.ClockSkew),
		NotAfter:        now.Add(responderTTL),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}},
	}
	if tmpl.NotAfter.After(r.issuer.Cert.NotAfter) {
		tmpl.NotAfter = r.issuer.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.issuer.Cert, key.Public(), r.issuer.Key)
	if err != nil {
		return fmt.Errorf("OCSP responder certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.cert, r.key, r.cache = cert, key, map[string]cached{}
	r.mu.Unlock()
	return nil
}

// Maintain rotates the responder certificate at half its life; call it
// periodically.
func (r *Responder) Maintain() error {
	r.mu.RLock()
	c := r.cert
	r.mu.RUnlock()
	if r.now().After(c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)) {
		return r.rotate()
	}
	return nil
}

// Invalidate drops the cached answer for serial (after a revocation).
func (r *Responder) Invalidate(serial string) {
	r.mu.Lock()
	r.gen++
	for h := range r.issuerKeyHash {
		delete(r.cache, cacheKey(serial, h))
	}
	r.mu.Unlock()
}

func cacheKey(serial string, h crypto.Hash) string { return serial + "/" + h.String() }

// Respond answers one DER OCSP request. Malformed requests get
// malformedRequest, requests about another issuer unauthorized, and a
// failing store tryLater; it never fails otherwise.
func (r *Responder) Respond(ctx context.Context, reqDER []byte) []byte {
	req, err := ocsp.ParseRequest(reqDER)
	if err != nil || req.SerialNumber == nil {
		return ocsp.MalformedRequestErrorResponse
	}
	if !r.answersFor(req) {
		return ocsp.UnauthorizedErrorResponse
	}
	return r.respond(ctx, req)
}

// respond answers a parsed request about this responder's issuer.
func (r *Responder) respond(ctx context.Context, req *ocsp.Request) []byte {
	serial := pki.FormatSerial(req.SerialNumber)
	now := r.now()
	key := cacheKey(serial, req.HashAlgorithm)
	r.mu.RLock()
	c, hit := r.cache[key]
	gen := r.gen
	r.mu.RUnlock()
	if hit && now.Before(c.expires) {
		return c.der
	}
	der, err := r.sign(ctx, req, serial, now)
	if err != nil {
		return ocsp.TryLaterErrorResponse
	}
	r.mu.Lock()
	if len(r.cache) > 100_000 {
		r.cache = map[string]cached{}
	}
	if r.gen == gen {
		r.cache[key] = cached{der: der, expires: now.Add(OCSPValidity / 2)}
	}
	r.mu.Unlock()
	return der
}

// answersFor says whether req names this responder's issuer.
func (r *Responder) answersFor(req *ocsp.Request) bool {
	nh, ok1 := r.issuerNameHash[req.HashAlgorithm]
	kh, ok2 := r.issuerKeyHash[req.HashAlgorithm]
	return ok1 && ok2 && bytes.Equal(nh, req.IssuerNameHash) && bytes.Equal(kh, req.IssuerKeyHash)
}

func (r *Responder) sign(ctx context.Context, req *ocsp.Request, serial string, now time.Time) ([]byte, error) {
	tmpl := ocsp.Response{
		SerialNumber: new(big.Int).Set(req.SerialNumber),
		ThisUpdate:   now.Add(-pki.ClockSkew),
		NextUpdate:   now.Add(OCSPValidity),
		IssuerHash:   req.HashAlgorithm,
	}
	rec, err := r.store.GetCertificate(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		tmpl.Status = ocsp.Unknown
	case err != nil:
		return nil, err
	case rec.Revoked():
		tmpl.Status = ocsp.Revoked
		tmpl.RevokedAt = rec.RevokedAt
		tmpl.RevocationReason = rec.RevocationReason
	default:
		tmpl.Status = ocsp.Good
	}
	r.mu.RLock()
	cert, key := r.cert, r.key
	r.mu.RUnlock()
	tmpl.Certificate = cert
	return ocsp.CreateResponse(r.issuer.Cert, cert, tmpl, key)
}

// ResponderCert returns the delegated responder certificate.
func (r *Responder) ResponderCert() *x509.Certificate {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert
}
