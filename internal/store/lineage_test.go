package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// TestRevocationReachesDescendantsAndState: revoking a serial revokes its
// unexpired renewals through any depth (expired links included in the walk),
// never its ancestors; an identity or node revocation is kept as state that
// refuses, inside the issuing transaction, a renewal of any certificate
// issued before it, and an issuance that began before it.
func TestRevocationReachesDescendantsAndState(t *testing.T) {
	for name, url := range map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "mutual.db") },
		"postgres": func(t *testing.T) string { return pgtest.Start(t).NewDatabase(t) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := store.Open(ctx, url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			now := time.Now().Truncate(time.Microsecond)
			record := func(serial, id, parent, node string, notAfter time.Time) {
				t.Helper()
				c := cert(serial, now)
				c.SPIFFEID, c.RenewedFrom, c.NodeID, c.NotAfter = id, parent, node, notAfter
				if err := db.RecordIssuance(ctx, c, "", now); err != nil {
					t.Fatal(err)
				}
			}
			const id = "spiffe://example.org/w"
			later := now.Add(time.Hour)
			// root → a → b (expired) → c; a → d; other is unrelated.
			record("01", id, "", "", later)
			record("0a", id, "01", "", later)
			record("0b", id, "0a", "", now.Add(-time.Minute))
			record("0c", id, "0b", "", later)
			record("0d", id, "0a", "", later)
			record("0e", id, "", "", later)
			revs, err := db.RevokeLineage(ctx, "0a", 1, now)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range revs {
				got = append(got, r.Serial)
			}
			if got[0] != "0a" {
				t.Fatalf("the named serial comes first: %v", got)
			}
			sort.Strings(got)
			if want := []string{"0a", "0c", "0d"}; !slices.Equal(got, want) {
				t.Fatalf("revoke 0a revoked %v, want %v (itself and its unexpired descendants)", got, want)
			}

			// A renewal of a revoked certificate is refused in the transaction.
			renew := func(serial, from, who, node string, at time.Time) error {
				c := cert(serial, at)
				c.SPIFFEID, c.RenewedFrom, c.NodeID, c.IssuedAt = who, from, node, at
				c.Check = &store.IssueCheck{Presented: from}
				return db.RecordIssuance(ctx, c, "", at)
			}
			if err := renew("f1", "0c", id, "", now.Add(time.Second)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("renewal of a revoked certificate: %v, want ErrRevoked", err)
			}
			// Identity revocation as state: a certificate issued before the
			// revocation but not on its list (0f, recorded after it, as one
			// that escaped it would be) cannot renew.
			if _, err := db.RevokeIdentity(ctx, id, 1, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			record("0f", id, "", "", later) // issued at now, before the revocation, yet not revoked
			if err := renew("f2", "0f", id, "", now.Add(2*time.Minute)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("renewal of a certificate issued before its identity's revocation: %v, want ErrRevoked", err)
			}
			// An issuance that began before the revocation is refused; one after is not.
			if err := renew("f3", "", id, "", now.Add(30*time.Second)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("issuance begun before the identity's revocation: %v, want ErrRevoked", err)
			}
			if err := renew("f4", "", id, "", now.Add(2*time.Minute)); err != nil {
				t.Fatalf("issuance after the revocation (a new token): %v", err)
			}
			// Node revocation as state covers the node's own certificates and
			// the workload certificates obtained through it.
			const node = "spiffe://example.org/node/n"
			record("a1", node, "", "", later)
			if _, err := db.RevokeNode(ctx, node, 1, now.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			record("a2", node, "", "", later)
			record("a3", "spiffe://example.org/x", "", node, later)
			if err := renew("f5", "a2", node, "", now.Add(2*time.Minute)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("node certificate issued before the node's revocation: %v, want ErrRevoked", err)
			}
			if err := renew("f6", "a2", "spiffe://example.org/x", node, now.Add(2*time.Minute)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("workload certificate requested with a node certificate issued before the node's revocation: %v, want ErrRevoked", err)
			}
			if err := renew("f7", "a3", "spiffe://example.org/x", node, now.Add(2*time.Minute)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("workload certificate through the node issued before its revocation: %v, want ErrRevoked", err)
			}
		})
	}
}
