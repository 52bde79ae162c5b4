package publish

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/store"
)

// CRLStore is what the CRL builder reads.
type CRLStore interface {
	RevokedUnexpired(ctx context.Context, now time.Time) ([]store.RevokedEntry, error)
	LastRevocationSeq(ctx context.Context) (int64, error)
}

// CRL builds and caches the issuing CA's certificate revocation list, valid
// for revocation.CRLValidity.
type CRL struct {
	Issuer *pki.Issuer
	Store  CRLStore
	// Now may be replaced by tests; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	der     []byte
	seq     int64
	built   time.Time
	number  *big.Int
	expires time.Time
}

func (c *CRL) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Current returns the DER CRL and the revocation sequence it includes,
// rebuilding it when revocations changed or half its validity passed.
func (c *CRL) Current(ctx context.Context) ([]byte, int64, error) {
	now := c.now()
	seq, err := c.Store.LastRevocationSeq(ctx)
	if err != nil {
		// The store is away: the last CRL stays good until its nextUpdate.
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.der != nil && now.Before(c.expires) {
			return c.der, c.seq, nil
		}
		return nil, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.der != nil && seq == c.seq && now.Before(c.built.Add(revocation.CRLValidity/2)) {
		return c.der, c.seq, nil
	}
	revoked, err := c.Store.RevokedUnexpired(ctx, now)
	if err != nil {
		if c.der != nil && now.Before(c.expires) {
			return c.der, c.seq, nil
		}
		return nil, 0, err
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, r := range revoked {
		n, err := pki.ParseSerial(r.Serial)
		if err != nil {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt, ReasonCode: r.Reason})
	}
	// CRL numbers must grow: milliseconds since the epoch grow across
	// restarts and replicas, and never repeat on one replica.
	number := big.NewInt(now.UnixMilli())
	if c.number != nil && number.Cmp(c.number) <= 0 {
		number = new(big.Int).Add(c.number, big.NewInt(1))
	}
	next := now.Add(revocation.CRLValidity)
	if next.After(c.Issuer.Cert.NotAfter) {
		next = c.Issuer.Cert.NotAfter
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                now.Add(-pki.ClockSkew),
		NextUpdate:                next,
		RevokedCertificateEntries: entries,
	}, c.Issuer.Cert, c.Issuer.Key)
	if err != nil {
		return nil, 0, fmt.Errorf("sign CRL: %w", err)
	}
	c.der, c.seq, c.built, c.number, c.expires = der, seq, now, number, next
	return der, seq, nil
}
