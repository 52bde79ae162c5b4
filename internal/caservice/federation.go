package caservice

import (
	"context"
	"fmt"
	"time"

	"github.com/mutual-tls/mutual/internal/federation"
)

// federate stores this trust domain's bundle (a new sequence number when
// its roots changed), prepares the bundle endpoint's answer and the
// Refresher that keeps the federated bundles, and lets the Authority wake
// it when a relationship is added or removed.
func (s *Service) federate(ctx context.Context, o Options) ([]byte, error) {
	b, err := federation.EnsureLocal(ctx, s.Store, s.caDir.TrustDomain, s.caDir.Roots, time.Now())
	if err != nil {
		return nil, err
	}
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("this trust domain's SPIFFE bundle: %w", err)
	}
	s.fed = &federation.Refresher{Store: s.Store, TrustDomain: s.caDir.TrustDomain, Roots: s.caDir.Roots, Clock: o.FederationClock, Log: s.log}
	s.fed.Init()
	s.Authority.OnFederationChange = s.fed.Wake
	return doc, nil
}
