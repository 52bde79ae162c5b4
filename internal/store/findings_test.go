package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/store"
)

// testFindings: findings reported again count once more and keep the
// latest detail and reporter; the listing is latest first with the total.
func testFindings(t *testing.T, db *store.DB) {
	now := time.Now().Truncate(time.Microsecond)
	a := store.Finding{Rule: "unexplained_identity", LogIndex: 7, SPIFFEID: "spiffe://example.org/x", Serial: "0a", Detail: "unknown token T"}
	b := store.Finding{Rule: "checkpoint_inconsistent", Detail: "fork"}
	if err := db.RecordFindings(ctx, []store.Finding{a, b}, "spiffe://example.org/admin/m1", now); err != nil {
		t.Fatal(err)
	}
	a.Detail = "unknown token T (again)"
	if err := db.RecordFindings(ctx, []store.Finding{a}, "spiffe://example.org/admin/m2", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	fs, total, err := db.ListFindings(ctx, 10)
	if err != nil || total != 2 || len(fs) != 2 {
		t.Fatalf("list: %+v, total %d, %v; want 2", fs, total, err)
	}
	got := fs[0]
	if got.Rule != a.Rule || got.Times != 2 || got.Detail != a.Detail || got.ReportedBy != "spiffe://example.org/admin/m2" ||
		!got.FirstReported.Equal(now) || !got.LastReported.Equal(now.Add(time.Minute)) || got.Serial != "0a" || got.LogIndex != 7 {
		t.Errorf("the finding reported twice: %+v", got)
	}
	if fs[1].Rule != b.Rule || fs[1].Times != 1 {
		t.Errorf("the other finding: %+v", fs[1])
	}
	if fs, total, err := db.ListFindings(ctx, 1); err != nil || total != 2 || len(fs) != 1 {
		t.Errorf("a page of one: %d of %d, %v", len(fs), total, err)
	}
}

// testVoidToken: a voided token cannot enroll; voiding one used, expired
// or unknown says which.
func testVoidToken(t *testing.T, db *store.DB) {
	now := time.Now()
	if err := db.CreateToken(ctx, token("void1", now)); err != nil {
		t.Fatal(err)
	}
	if err := db.VoidToken(ctx, "void1", now); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssuance(ctx, cert("ee01", now), "void1", now); !errors.Is(err, store.ErrTokenExpired) {
		t.Errorf("enrollment with a voided token: %v, want ErrTokenExpired", err)
	}
	if err := db.VoidToken(ctx, "void1", now); !errors.Is(err, store.ErrTokenExpired) {
		t.Errorf("voiding it again: %v, want ErrTokenExpired", err)
	}
	if err := db.CreateToken(ctx, token("used1", now)); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssuance(ctx, cert("ee02", now), "used1", now); err != nil {
		t.Fatal(err)
	}
	if err := db.VoidToken(ctx, "used1", now); !errors.Is(err, store.ErrTokenUsed) {
		t.Errorf("voiding a used token: %v, want ErrTokenUsed", err)
	}
	if err := db.VoidToken(ctx, "nobody", now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("voiding an unknown token: %v, want ErrNotFound", err)
	}
}
