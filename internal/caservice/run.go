package caservice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
)

// Run serves the API (and metrics, and the plain-HTTP CRL and OCSP), runs the
// revocation feed and the issuance log, records the log's checkpoint beside
// the keys, refreshes the federated bundles, ends partnerships on their
// date, and renews the service's own TLS certificate as it ages, until
// ctx is done or one of them fails. It returns once all of them have
// stopped, after a graceful shutdown, with the first failure.
func (s *Service) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	// Whichever part stops first, cleanly or not, stops the others.
	run := func(f func(context.Context) error) {
		g.Go(func() error {
			defer stop()
			if err := f(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	run(func(ctx context.Context) error { return s.Server.Serve(ctx, s.ln) })
	run(s.hub.Run)
	run(s.tlog.Run)
	if s.hln != nil {
		run(func(ctx context.Context) error { return s.Server.ServeRevocation(ctx, s.hln) })
	}
	if s.mln != nil {
		run(func(ctx context.Context) error { return s.Server.ServeMetrics(ctx, s.mln) })
	}
	run(s.watchStore)
	run(s.fed.Run)
	run(func(ctx context.Context) error { return s.endPartners(ctx, s.clock) })
	run(s.maintain)
	run(s.rotateJWTKeys)
	run(s.watchCA)
	return g.Wait()
}

// maintain renews the service's TLS certificate and the OCSP responder's
// certificate as they age, hourly, until ctx is done.
func (s *Service) maintain(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.reloadMu.Lock()
			err := s.serverCert(ctx)
			s.reloadMu.Unlock()
			if err != nil {
				s.log.Error("CA service TLS certificate", "error", err.Error())
			}
			if err := s.ocsp.load().Maintain(); err != nil {
				s.log.Error("OCSP responder certificate", "error", err.Error())
			}
		}
	}
}

// watchStore records the log's latest checkpoint beside the keys as it
// grows, and says once, loudly, when the store is found damaged, deleted
// or replaced (health checks then answer 503 with the same message).
func (s *Service) watchStore(ctx context.Context) error {
	w, err := readWitness(s.Dir)
	if err != nil {
		s.log.Error("issuance log checkpoint", "error", err.Error())
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	warned := false
	save := func(ctx context.Context) {
		if err := s.Store.Damaged(); err != nil {
			if !warned {
				s.log.Error("the store is damaged: this CA cannot issue; stop it and restore the store from backup", "error", err.Error())
				warned = true
			}
			return
		}
		next, err := saveWitness(ctx, s.Dir, s.Store, w)
		if err != nil {
			s.log.Warn("cannot record the issuance log's checkpoint beside the keys", "error", err.Error())
			return
		}
		w = next
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			save(fctx)
			cancel()
			return nil
		case <-t.C:
			save(ctx)
		}
	}
}

// serverCert reissues the service's TLS certificate under the current
// intermediate when a rotation left it under a retired one, or when it
// aged, and serves it.
func (s *Service) serverCert(ctx context.Context) error {
	if err := s.reissueAfterRotation(ctx); err != nil {
		return err
	}
	return s.loadServerCert(ctx)
}

// loadServerCert reads DIR/server and reissues it when a third of its life
// or less is left. The chain served is the one an issuance answers (leaf,
// [cross-signed intermediate,] intermediate; the server adds the roots for a
// bootstrapping client).
func (s *Service) loadServerCert(ctx context.Context) error {
	dir := filepath.Join(s.Dir, pki.ServerDir)
	id, err := identity.Load(dir)
	if err != nil {
		return fmt.Errorf("the CA service's TLS identity: %w", err)
	}
	leaf := id.Leaf()
	now := time.Now()
	if left := leaf.NotAfter.Sub(now); left < leaf.NotAfter.Sub(leaf.NotBefore)/3 {
		if id, err = s.renewServerCert(ctx, dir, id, now); err != nil {
			return err
		}
	}
	chain := s.Authority.ChainOf(id.Chain[0])
	if chain == nil {
		return fmt.Errorf("the CA service's TLS certificate in %s is signed by no intermediate of this CA, current or retired: restart the service, which reissues it under the current intermediate", dir)
	}
	tc := id.TLSCertificate()
	tc.Certificate = nil
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	s.serverTLS.Store(&tc)
	return nil
}

// renewServerCert issues the service's TLS certificate anew with a fresh
// key, saves it in dir and records it.
func (s *Service) renewServerCert(ctx context.Context, dir string, old *identity.Identity, now time.Time) (*identity.Identity, error) {
	key, err := pki.GenerateKey(s.caDir.Config.KeyType, nil)
	if err != nil {
		return nil, err
	}
	leaf := old.Leaf()
	cert, err := s.caDir.Issuer.Issue(pki.Leaf{ID: old.ID, PublicKey: key.Public(), DNSNames: leaf.DNSNames,
		IPAddresses: leaf.IPAddresses, TTL: pki.ServerTTL, Now: now})
	if err != nil {
		return nil, fmt.Errorf("renew the CA service's TLS certificate: %w", err)
	}
	id := &identity.Identity{ID: old.ID, Chain: s.Authority.ChainOf(cert), Key: key, Roots: s.caDir.Roots}
	if err := id.Save(dir); err != nil {
		return nil, fmt.Errorf("renew the CA service's TLS certificate: %w", err)
	}
	if err := s.Authority.Import(ctx, cert, translog.CARequester("server")); err != nil {
		return nil, err
	}
	s.log.Info("renewed the CA service's TLS certificate", "serial", pki.FormatSerial(cert.SerialNumber), "not_after", cert.NotAfter)
	return id, nil
}
