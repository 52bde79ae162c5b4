package ca_test

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/store"
)

// racingStore runs meanwhile once, after the first token read: what
// another replica does between a request's token read and its issuing
// transaction.
type racingStore struct {
	*store.DB
	meanwhile func()
}

func (s *racingStore) GetToken(ctx context.Context, id string) (store.Token, error) {
	rec, err := s.DB.GetToken(ctx, id)
	if f := s.meanwhile; f != nil {
		s.meanwhile = nil
		f()
	}
	return rec, err
}

// TestEnrollRetryRacingItsFirstAttempt: a retry (same token, same key)
// that read the token unused while its first attempt, whose answer was lost
// with a killed replica, was still committing finds the token used only in
// its own issuing transaction; it gets the certificate the first attempt
// paid the token for. A request with another key stays refused.
func TestEnrollRetryRacingItsFirstAttempt(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	for _, sameKey := range []bool{true, false} {
		tok := e.token(t, ca.TokenRequest{ID: "spiffe://example.org/w/retry"})
		_, req := csr(t, x509.CertificateRequest{})
		retry := req
		if !sameKey {
			_, retry = csr(t, x509.CertificateRequest{})
		}
		var first *ca.Issued
		var firstErr error
		racing := &ca.Authority{Issuer: e.a.Issuer, Roots: e.a.Roots, Policy: e.a.Policy, URLs: e.a.URLs, Now: e.a.Now,
			Store: &racingStore{DB: e.db, meanwhile: func() { first, firstErr = e.a.Enroll(ctx, tok, req, 0) }}}
		got, err := racing.Enroll(ctx, tok, retry, 0)
		if firstErr != nil {
			t.Fatalf("first attempt: %v", firstErr)
		}
		if !sameKey {
			wantCode(t, err, ca.KindUnauthenticated, api.CodeTokenUsed)
			continue
		}
		if err != nil || got.Serial != first.Serial {
			t.Errorf("retry racing its first attempt = %v, %v; want the first attempt's certificate", got, err)
		}
	}
}
