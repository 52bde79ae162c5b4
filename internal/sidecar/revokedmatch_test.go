package sidecar

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/revocation"
)

// TestRevokedMatch: a revocation event closes connections of the revoked
// serial in our trust domain, never a federated partner's connection whose
// serial happens to be the same, and matches by serial alone when the
// event names no parsable identity (fail closed).
func TestRevokedMatch(t *testing.T) {
	ours := spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")
	partner := spiffeid.RequireFromString("spiffe://partner.example/billing")
	ev := revocation.Event{Serial: "0a0b", SPIFFEID: "spiffe://example.org/ns/prod/web"}
	for _, c := range []struct {
		name   string
		ev     revocation.Event
		id     spiffeid.ID
		serial string
		want   bool
	}{
		{"our revoked connection", ev, ours, "0a0b", true},
		{"another of our identities, same serial", ev, spiffeid.RequireFromString("spiffe://example.org/ns/prod/api"), "0a0b", true},
		{"other serial", ev, ours, "0c0d", false},
		{"partner with a colliding serial", ev, partner, "0a0b", false},
		{"event without an identity", revocation.Event{Serial: "0a0b"}, partner, "0a0b", true},
		{"connection without an identity", ev, spiffeid.ID{}, "0a0b", true},
	} {
		if got := revokedMatch(c.ev)(c.id, c.serial); got != c.want {
			t.Errorf("%s: closes = %v, want %v", c.name, got, c.want)
		}
	}
}
