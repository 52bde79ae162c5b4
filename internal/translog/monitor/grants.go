package monitor

import (
	"context"
	"fmt"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/translog"
)

// AdminAPI is what the monitor reads from the CA's admin API;
// internal/client's Client provides it.
type AdminAPI interface {
	ListTokens(ctx context.Context) (*api.TokenList, error)
	ListEntries(ctx context.Context) (*api.EntryList, error)
	CloseIdleConnections()
}

// Grants explains identities by the CA's join tokens and registration
// entries: the identity each of them grants. It implements
// translog.Grants.
type Grants struct {
	tokens  map[string]string // token ID → SPIFFE ID
	entries map[string]string // entry ID → SPIFFE ID
}

// NewGrants makes Grants from token and entry IDs to the identities they
// grant. It keeps the maps.
func NewGrants(tokens, entries map[string]string) *Grants {
	return &Grants{tokens: tokens, entries: entries}
}

// LoadGrants reads the CA's tokens and entries through its admin API.
func LoadGrants(ctx context.Context, ca AdminAPI) (*Grants, error) {
	g := NewGrants(map[string]string{}, map[string]string{})
	toks, err := ca.ListTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the CA's join tokens: %w", err)
	}
	for _, t := range toks.Tokens {
		g.tokens[t.ID] = t.SPIFFEID
	}
	ents, err := ca.ListEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the CA's registration entries: %w", err)
	}
	for _, en := range ents.Entries {
		g.entries[en.ID] = en.SPIFFEID
	}
	return g, nil
}

// Explains returns "" when requestedBy, a token or an entry, granted id;
// else why not. Other requesters are unknown to it.
func (g *Grants) Explains(requestedBy translog.Requester, id string) string {
	var granted string
	var ok bool
	switch requestedBy.Kind() {
	case translog.RequestedByToken:
		granted, ok = g.tokens[requestedBy.Ref()]
	case translog.RequestedByEntry:
		granted, ok = g.entries[requestedBy.Ref()]
	}
	switch {
	case !ok:
		return fmt.Sprintf("%s is unknown to the CA", requestedBy)
	case granted != id:
		return fmt.Sprintf("%s granted %s, not %s", requestedBy, granted, id)
	}
	return ""
}
