package caservice

import (
	"context"
	"fmt"
	"time"

	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/jwtauthority"
)

// openJWT loads the JWT authority keys from the store (making the first at
// first start, encrypted with the CA's passphrase) and returns the issuer
// of JWT-SVIDs the server serves. A replaced key stays published at least
// twice the policy's longest lifetime.
func (s *Service) openJWT(ctx context.Context, o Options) (*ca.JWTIssuer, error) {
	overlap := max(jwtauthority.DefaultOverlap, 2*s.Authority.Policy.MaxTTL)
	keys, err := jwtauthority.LoadOrCreate(ctx, s.Store, o.Passphrase, jwtauthority.Options{Overlap: overlap})
	if err != nil {
		return nil, fmt.Errorf("the JWT authority: %w", err)
	}
	s.jwtKeys = keys
	return &ca.JWTIssuer{Authority: s.Authority, Keys: keys, Check: s.Store}, nil
}

// rotateJWTKeys follows the JWT authority keys other replicas make, and
// rotates the key as it ages, every minute until ctx is done.
func (s *Service) rotateJWTKeys(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			changed, err := s.jwtKeys.Rotate(ctx)
			if err != nil {
				s.log.Error("JWT authority key rotation failed; the current key keeps signing", "error", err.Error())
			} else if changed {
				s.log.Info("JWT authority keys rotated", "published", s.jwtKeys.KeyIDs())
			}
		}
	}
}
