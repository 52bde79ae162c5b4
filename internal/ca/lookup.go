package ca

import (
	"context"
	"errors"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/store"
)

// Certificate returns the stored record of one issued certificate, by its
// serial as openssl or a browser prints it (see NormalizeSerial).
func (a *Authority) Certificate(ctx context.Context, serial string) (store.Certificate, error) {
	s, err := NormalizeSerial(serial)
	if err != nil {
		return store.Certificate{}, err
	}
	rec, err := a.Store.GetCertificate(ctx, s)
	if errors.Is(err, store.ErrNotFound) {
		return rec, newErr(KindNotFound, api.CodeNotFound, nil, "no certificate with serial %s was issued by this CA", s)
	}
	if err != nil {
		return rec, classify(err)
	}
	return rec, nil
}
