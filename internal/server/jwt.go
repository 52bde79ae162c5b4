package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
)

// JWTIssuance is what the JWT-SVID endpoints ask of the CA;
// *ca.JWTIssuer provides it.
type JWTIssuance interface {
	IssueJWTForNode(ctx context.Context, peer *x509.Certificate, entryID string, audience []string, ttl time.Duration) (*ca.IssuedJWT, error)
	JWTBundle() *jwtbundle.Bundle
}

// routeJWT adds the JWT-SVID endpoints when the CA signs JWT-SVIDs.
func (s *Server) routeJWT() {
	if s.cfg.JWT == nil {
		return
	}
	s.route("POST /v1/node/jwtsvid", "node_jwtsvid", s.nodeJWTSVID)
	s.route("GET /v1/bundle/spiffe", "bundle_spiffe", s.spiffeBundle)
}

func (s *Server) nodeJWTSVID(w http.ResponseWriter, r *http.Request) (int, error) {
	p := peer(r)
	if p == nil {
		return 0, &ca.Error{Kind: ca.KindUnauthenticated, Code: api.CodeNodeRequired, Msg: "this endpoint needs a node's client certificate (spiffe://TD/node/NAME)"}
	}
	var req api.NodeJWTSVIDRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	if req.EntryID == "" || len(req.Audience) == 0 {
		return 0, badRequest{errors.New(`both "entry_id" and "audience" are required`)}
	}
	is, err := s.cfg.JWT.IssueJWTForNode(r.Context(), p, req.EntryID, req.Audience, time.Duration(req.TTL))
	if err != nil {
		return 0, err
	}
	s.metrics.issued.WithLabelValues("node_jwt").Inc()
	return ok(w, api.JWTSVIDResponse{SPIFFEID: is.ID.String(), Token: is.Token, IssuedAt: is.IssuedAt.UTC(), ExpiresAt: is.Expiry.UTC()})
}
