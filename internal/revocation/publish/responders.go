package publish

import (
	"context"
	"crypto"
	"errors"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/pki"
)

// Responders answers OCSP for several issuing CAs of one trust domain: the
// current intermediate and those a rotation retired, each through its own
// Responder, so that certificates of a retired intermediate can still be
// checked (and found revoked) until they expire.
type Responders []*Responder

// NewResponders makes a Responder for each issuer, all reading st and
// signing with key (NewKeyedResponder; nil: in-memory keys).
func NewResponders(issuers []*pki.Issuer, key crypto.Signer, st OCSPStore) (Responders, error) {
	rs := make(Responders, 0, len(issuers))
	for _, is := range issuers {
		r, err := NewKeyedResponder(is, key, st, nil)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// Respond answers reqDER with the Responder of the issuer it names; a
// request about no issuer here is answered unauthorized, a malformed one
// malformedRequest.
func (rs Responders) Respond(ctx context.Context, reqDER []byte) []byte {
	req, err := ocsp.ParseRequest(reqDER)
	if err != nil || req.SerialNumber == nil {
		return ocsp.MalformedRequestErrorResponse
	}
	for _, r := range rs {
		if r.answersFor(req) {
			return r.respond(ctx, req)
		}
	}
	return ocsp.UnauthorizedErrorResponse
}

// Invalidate drops the cached answers for serial in every Responder.
func (rs Responders) Invalidate(serial string) {
	for _, r := range rs {
		r.Invalidate(serial)
	}
}

// Maintain rotates each Responder's certificate at half its life.
func (rs Responders) Maintain() error {
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.Maintain())
	}
	return errors.Join(errs...)
}
