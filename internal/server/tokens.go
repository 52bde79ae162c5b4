package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/store"
)

// routeTokens adds voiding join tokens when the Config has it.
func (s *Server) routeTokens() {
	if s.cfg.Tokens == nil {
		return
	}
	s.route("POST /v1/tokens/{id}/void", "tokens_void", s.admin(s.voidToken))
}

// TokenVoiding voids unused join tokens; *store.DB provides it.
type TokenVoiding interface {
	VoidToken(ctx context.Context, id string, now time.Time) error
}

// voidToken makes an unused join token expire now (POST
// /v1/tokens/{id}/void, admin): a token handed out by mistake, or to
// someone who should no longer enroll.
func (s *Server) voidToken(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	id := r.PathValue("id")
	err := s.cfg.Tokens.VoidToken(r.Context(), id, time.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return 0, &ca.Error{Kind: ca.KindNotFound, Code: api.CodeTokenUnknown, Msg: "no join token " + id + "; `mutual token list` shows them", Err: err}
	case errors.Is(err, store.ErrTokenUsed):
		return 0, &ca.Error{Kind: ca.KindInvalid, Code: api.CodeTokenUsed, Msg: "join token " + id + " was used already: revoke the certificate it obtained instead", Err: err}
	case errors.Is(err, store.ErrTokenExpired):
		return 0, &ca.Error{Kind: ca.KindInvalid, Code: api.CodeTokenExpired, Msg: "join token " + id + " has expired already: nothing to void", Err: err}
	case err != nil:
		return 0, err
	}
	s.log.Info("token voided", "token_id", id, "by", by.String())
	return ok(w, map[string]string{"voided": id})
}
