package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/watch"
)

// CertSource is what a service needs of its certificate source: its own
// SVID and the trust bundle.
type CertSource interface {
	x509svid.Source
	x509bundle.Source
}

// openSource opens the certificate source; an identity directory is
// followed by a part, a Workload API source closed with the sidecar.
func (s *sidecar) openSource(ctx context.Context, cfg Config) error {
	src := cfg.Source
	switch {
	case src.IdentityDir != "" && src.WorkloadAPI != "":
		return errors.New("--identity-dir: give --identity-dir or --workload-api, not both")
	case src.IdentityDir != "":
		ds, err := identity.NewDirSource(src.IdentityDir)
		if err != nil {
			return fmt.Errorf("--identity-dir: %w", err)
		}
		s.m.ObserveCertificate(ds.Identity().Leaf())
		s.src = ds
		l := s.followDir(ds)
		l.Interval, l.Now = cfg.PollInterval, cfg.Reload
		s.parts = append(s.parts, l.Run)
		return nil
	case src.WorkloadAPI != "":
		if !strings.HasPrefix(src.WorkloadAPI, "unix://") && !strings.HasPrefix(src.WorkloadAPI, "tcp://") {
			return fmt.Errorf("--workload-api: %q: use unix:///path/to/socket", src.WorkloadAPI)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ws, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr(src.WorkloadAPI)))
		if err != nil {
			return fmt.Errorf("--workload-api: no identity from %s: %w", src.WorkloadAPI, err)
		}
		s.closers = append(s.closers, func() { ws.Close() })
		if svid, err := ws.GetX509SVID(); err == nil {
			s.m.ObserveCertificate(svid.Certificates[0])
		}
		s.src = ws
		return nil
	}
	return errors.New("--identity-dir: required: --identity-dir DIR or --workload-api unix:///PATH")
}

// followDir is the loop that follows the identity directory, keeping the
// certificate metrics current and saying what it served.
func (s *sidecar) followDir(ds *identity.DirSource) watch.Loop {
	return watch.Loop{
		Reload: func(context.Context) (bool, error) { return ds.Reload() },
		OnChange: func() {
			id := ds.Identity()
			s.m.ObserveCertificate(id.Leaf())
			s.log.Info("identity reloaded", "dir", ds.Dir(), "spiffe_id", id.ID.String(), "serial", pki.FormatSerial(id.Leaf().SerialNumber), "not_after", id.Leaf().NotAfter,
				"federated", federatedNames(id))
		},
		OnError: func(err error) {
			s.log.Warn("identity reload failed; serving the last good one", "dir", ds.Dir(), "error", err.Error())
		},
	}
}

// federatedNames are the federated trust domains id trusts, by name, for
// the log ("" for none).
func federatedNames(id *identity.Identity) string {
	names := make([]string, 0, len(id.Federated))
	for td := range id.Federated {
		names = append(names, td.Name())
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// watcher builds the revocation watcher from the first source found:
// Revocation.CAURLs, the identity directory's mutual.json, or the CRL
// distribution point or OCSP address in the proxy's own certificate.
// Without one the proxy does not start, unless Revocation.Off says so
// (then it returns nil).
func (s *sidecar) watcher(cfg Config) (*revocation.Watcher, error) {
	return RevocationWatcher(s.src, cfg.Source.IdentityDir, cfg.Revocation, s.log)
}

// RevocationWatcher builds the revocation watcher for a service whose
// certificate comes from src (and identityDir, when it is a directory),
// from the first source found: r.CAURLs, the identity directory's
// mutual.json, or the CRL distribution point or OCSP address in the
// service's own certificate. Without one it is an error, unless r.Off says
// so (then it returns nil).
func RevocationWatcher(src CertSource, identityDir string, r Revocation, log *slog.Logger) (*revocation.Watcher, error) {
	if r.Off {
		if len(r.CAURLs) > 0 {
			return nil, errors.New("--no-revocation: give --ca or --no-revocation, not both")
		}
		log.Warn("revocation checks are off (--no-revocation): revoked certificates are accepted until they expire")
		return nil, nil
	}
	w := &revocation.Watcher{CAURLs: r.CAURLs, Source: src, CRLInterval: r.CRLInterval, Log: log}
	from := "--ca"
	if dir := identityDir; len(w.CAURLs) == 0 && dir != "" {
		urls, err := client.LoadCAURLs(dir)
		if err != nil {
			return nil, fmt.Errorf("--identity-dir: %w", err)
		}
		w.CAURLs, from = urls, filepath.Join(dir, client.ServersFile)
	}
	if len(w.CAURLs) == 0 {
		svid, err := src.GetX509SVID()
		if err != nil {
			return nil, fmt.Errorf("the service's certificate: %w", err)
		}
		if len(svid.Certificates) > 1 {
			w.CAURLs, w.CRLURL = revocation.SourceFromCertificate(svid.Certificates[0], svid.Certificates[1])
		}
		from = "the proxy's certificate"
	}
	if len(w.CAURLs) == 0 && w.CRLURL == "" {
		return nil, fmt.Errorf("--ca: no revocation source: no --ca, no %s in the identity directory, and the proxy's certificate names no CRL or OCSP address; "+
			"give --ca https://CA:PORT, or --no-revocation to accept revoked certificates until they expire", client.ServersFile)
	}
	log.Info("revocation source", "from", from, "ca", strings.Join(w.CAURLs, ","), "crl", w.CRLURL)
	return w, nil
}

// closeRevoked closes a proxy's live connections authenticated with a
// certificate just revoked, and logs it.
// revokedMatch says which live connections a revocation event ends: those
// whose certificate has the event's serial, unless the peer is of another
// trust domain than the revoked identity (a federated partner's serial may
// equal one of ours by chance; our CA's events name our identities). An
// event whose ID does not parse matches by serial alone: fail closed.
func revokedMatch(e revocation.Event) func(spiffeid.ID, string) bool {
	td, err := spiffeid.FromString(e.SPIFFEID)
	return func(id spiffeid.ID, serial string) bool {
		if serial != e.Serial {
			return false
		}
		return err != nil || id.IsZero() || id.TrustDomain() == td.TrustDomain()
	}
}

func closeRevoked(p interface {
	CloseConnections(func(spiffeid.ID, string) bool) int
}, log *slog.Logger) func(revocation.Event) {
	return func(e revocation.Event) {
		n := p.CloseConnections(revokedMatch(e))
		log.Warn("certificate revoked", "serial", e.Serial, "peer_id", e.SPIFFEID, "reason", pki.RevocationReasonName(e.Reason), "connections_closed", n)
	}
}
