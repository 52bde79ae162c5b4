package server

import (
	"context"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/store"
)

// CertificateLookup finds one issued certificate by serial, for
// GET /v1/certificates/{serial}, and summarizes the live ones, for
// GET /v1/certificates/summary. *ca.Authority provides it.
type CertificateLookup interface {
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
	Summary(ctx context.Context) (*api.Summary, error)
}

// certificate answers one certificate's record with its PEM (admin): what
// an operator looks up by the serial a log line or a browser showed.
func (s *Server) certificate(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	c, err := s.cfg.Authority.Certificate(r.Context(), r.PathValue("serial"))
	if err != nil {
		return 0, err
	}
	return ok(w, certificateInfo(c, true))
}

// summary answers the estate at a glance (admin): live certificates by
// kind, by identity and by expiry, and the latest revocations.
func (s *Server) summary(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	sum, err := s.cfg.Authority.Summary(r.Context())
	if err != nil {
		return 0, err
	}
	return ok(w, sum)
}
