package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// TestCheckGrant: a credential that is signed but not recorded (a
// JWT-SVID) is refused when its identity was revoked after the request
// began, or when the node certificate that asked is revoked; a request
// begun after the identity's revocation passes, as an issuance would.
func TestCheckGrant(t *testing.T) {
	pgServer = pgtest.Start(t)
	defer func() { pgServer = nil }()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			now := time.Now().Truncate(time.Microsecond)
			node := cert("ee01", now)
			node.SPIFFEID = "spiffe://example.org/node/n"
			for _, c := range []*store.Certificate{node, cert("ee02", now)} {
				if err := db.RecordIssuance(ctx, c, "", now); err != nil {
					t.Fatal(err)
				}
			}
			check := func(at time.Time) error {
				return db.CheckGrant(ctx, &store.Certificate{SPIFFEID: "spiffe://example.org/web", NodeID: node.SPIFFEID,
					IssuedAt: at, Check: &store.IssueCheck{Presented: "ee01"}})
			}
			if err := check(now); err != nil {
				t.Fatalf("nothing revoked: %v", err)
			}
			if err := db.CheckGrant(ctx, &store.Certificate{SPIFFEID: "spiffe://example.org/web"}); err == nil {
				t.Fatal("a grant checked without a check passes")
			}
			revokedAt := now.Add(time.Second)
			if _, err := db.RevokeIdentity(ctx, "spiffe://example.org/web", 0, revokedAt); err != nil {
				t.Fatal(err)
			}
			if err := check(now); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("identity revoked while the request was under way: %v, want ErrRevoked", err)
			}
			if err := check(revokedAt.Add(time.Second)); err != nil {
				t.Fatalf("a request begun after the identity's revocation: %v", err)
			}
			if _, err := db.RevokeSerial(ctx, "ee01", 0, revokedAt.Add(2*time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := check(revokedAt.Add(3 * time.Second)); !errors.Is(err, store.ErrRevoked) {
				t.Fatalf("the node certificate that asked is revoked: %v, want ErrRevoked", err)
			}
		})
	}
}
