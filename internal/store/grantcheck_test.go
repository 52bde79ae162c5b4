package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// TestCheckGrantAndJWTKeys: a credential that is signed but not recorded (a
// JWT-SVID) is refused when its identity was revoked after the request
// began, or when the node certificate that asked is revoked; a request
// begun after the identity's revocation passes, as an issuance would.
// JWT authority keys are added only when no replica added one since the
// cutoff, listed oldest first, and deleted.
func TestCheckGrantAndJWTKeys(t *testing.T) {
	pgServer = pgtest.Start(t)
	defer func() { pgServer = nil }()
	for name, open := range backends(t) {
		t.Run(name+"/jwt keys", func(t *testing.T) { testJWTKeys(t, open(t)) })
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

func testJWTKeys(t *testing.T, db *store.DB) {
	now := time.Now().Truncate(time.Microsecond)
	add := func(kid string, at, notBefore time.Time) bool {
		t.Helper()
		ok, err := db.AddJWTKey(ctx, store.JWTKey{ID: kid, Created: at, PEM: []byte("pem " + kid)}, notBefore)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !add("k1", now, now.Add(-time.Hour)) {
		t.Fatal("the first key was not added")
	}
	if add("k1b", now.Add(time.Second), now.Add(-time.Hour)) {
		t.Fatal("a second key added although one was made after the cutoff (two replicas rotating at once)")
	}
	if !add("k2", now.Add(2*time.Hour), now.Add(time.Hour)) {
		t.Fatal("a key due for rotation was not added")
	}
	keys, err := db.ListJWTKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].ID != "k1" || keys[1].ID != "k2" || string(keys[1].PEM) != "pem k2" || !keys[0].Created.Equal(now) {
		t.Fatalf("keys: %+v %v", keys, err)
	}
	if err := db.DeleteJWTKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if keys, _ := db.ListJWTKeys(ctx); len(keys) != 1 || keys[0].ID != "k2" {
		t.Fatalf("after deleting k1: %+v", keys)
	}
}
