package caservice

import (
	"context"
	"fmt"
	"time"

	"github.com/mutual-tls/mutual/internal/federation"
	"github.com/mutual-tls/mutual/internal/pki"
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
	s.clock = o.FederationClock
	return doc, nil
}

// partnerCheck is how often the service looks for partnerships whose end
// date has passed.
const partnerCheck = 5 * time.Second

// endPartners ends each partnership when its end date passes (revoking
// everything issued under it), until ctx is done.
func (s *Service) endPartners(ctx context.Context, clock federation.Clock) error {
	if clock == nil {
		clock = realClock{}
	}
	by := pki.ServerID(s.caDir.TrustDomain)
	for {
		if err := s.Authority.EndExpiredPartners(ctx, by); err != nil && ctx.Err() == nil {
			s.log.Error("cannot end the partnerships past their end date; retrying", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-clock.After(partnerCheck):
		}
	}
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
