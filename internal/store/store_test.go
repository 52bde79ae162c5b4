package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// backends opens a fresh store on each kind: a SQLite file and a real
// PostgreSQL server.
func backends(t *testing.T) map[string]func(t *testing.T) *store.DB {
	return map[string]func(t *testing.T) *store.DB{
		"sqlite": func(t *testing.T) *store.DB {
			db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "mutual.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
		"postgres": func(t *testing.T) *store.DB {
			srv := pgShared(t)
			db, err := store.Open(context.Background(), srv.NewDatabase(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
}

// pgShared returns the PostgreSQL server TestContract started.
var pgServer *pgtest.Server

func pgShared(t *testing.T) *pgtest.Server {
	if pgServer == nil {
		t.Fatal("no PostgreSQL server started")
	}
	return pgServer
}

func TestContract(t *testing.T) {
	pgServer = pgtest.Start(t)
	defer func() { pgServer = nil }()
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("tokens", func(t *testing.T) { testTokens(t, open(t)) })
			t.Run("issuance consumes the token once", func(t *testing.T) { testConsume(t, open(t)) })
			t.Run("concurrent token use", func(t *testing.T) { testConcurrentConsume(t, open(t)) })
			t.Run("revocation", func(t *testing.T) { testRevocation(t, open(t)) })
			t.Run("reopen keeps data and schema", func(t *testing.T) { testReopen(t, name, open) })
			t.Run("log monitor findings", func(t *testing.T) { testFindings(t, open(t)) })
			t.Run("void a token", func(t *testing.T) { testVoidToken(t, open(t)) })
		})
	}
}

var ctx = context.Background()

func token(id string, now time.Time) store.Token {
	return store.Token{
		ID: id, SecretHash: []byte("0123456789abcdef0123456789abcdef"), SPIFFEID: "spiffe://example.org/web",
		DNSNames: []string{"web.internal"}, IPAddresses: []string{"10.0.0.1"}, CertTTL: time.Hour,
		CreatedAt: now, ExpiresAt: now.Add(15 * time.Minute), CreatedBy: "spiffe://example.org/admin/op",
	}
}

func cert(serial string, now time.Time) *store.Certificate {
	return &store.Certificate{Serial: serial, SPIFFEID: "spiffe://example.org/web", NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(time.Hour), IssuedAt: now, DER: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, RequestedBy: "token:t1"}
}

func testTokens(t *testing.T, db *store.DB) {
	now := time.Now().Truncate(time.Microsecond).UTC()
	want := token("00000000000000a1", now)
	if err := db.CreateToken(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateToken(ctx, want); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate token: got %v, want ErrAlreadyExists", err)
	}
	got, err := db.GetToken(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if _, err := db.GetToken(ctx, "ffffffffffffffff"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: got %v", err)
	}
	list, err := db.ListTokens(ctx, 0)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v, %d tokens", err, len(list))
	}
}

func testConsume(t *testing.T, db *store.DB) {
	now := time.Now().Truncate(time.Microsecond)
	if err := db.CreateToken(ctx, token("00000000000000b1", now)); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssuance(ctx, cert("aa01", now), "00000000000000b1", now); err != nil {
		t.Fatal(err)
	}
	// Second use: refused, and the second certificate is not stored.
	err := db.RecordIssuance(ctx, cert("aa02", now), "00000000000000b1", now)
	if !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("reuse: got %v, want ErrTokenUsed", err)
	}
	if _, err := db.GetCertificate(ctx, "aa02"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("certificate of a refused issuance was stored: %v", err)
	}
	tok, _ := db.GetToken(ctx, "00000000000000b1")
	if tok.UsedSerial != "aa01" || tok.UsedAt.IsZero() {
		t.Fatalf("token not marked used by aa01: %+v", tok)
	}
	// Expired token: refused, nothing stored.
	if err := db.CreateToken(ctx, token("00000000000000b2", now.Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssuance(ctx, cert("aa03", now), "00000000000000b2", now); !errors.Is(err, store.ErrTokenExpired) {
		t.Fatalf("expired: got %v", err)
	}
	if err := db.RecordIssuance(ctx, cert("aa04", now), "00000000000000ff", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown token: got %v", err)
	}
	// Duplicate serial.
	if err := db.RecordIssuance(ctx, cert("aa01", now), "", now); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate serial: got %v", err)
	}
	c, err := db.GetCertificate(ctx, "aa01")
	if err != nil || c.SPIFFEID != "spiffe://example.org/web" || c.Revoked() {
		t.Fatalf("get: %+v %v", c, err)
	}
}

func testConcurrentConsume(t *testing.T, db *store.DB) {
	now := time.Now()
	if err := db.CreateToken(ctx, token("00000000000000c1", now)); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.RecordIssuance(ctx, cert(fmt.Sprintf("cc%02x", i), now), "00000000000000c1", now)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrTokenUsed):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent uses of one token succeeded, want exactly 1", ok, n)
	}
	list, _ := db.ListCertificates(ctx, store.CertificateFilter{})
	if len(list) != 1 {
		t.Fatalf("%d certificates stored, want 1", len(list))
	}
}

func testRevocation(t *testing.T, db *store.DB) {
	now := time.Now().Truncate(time.Microsecond)
	for _, s := range []string{"dd01", "dd02"} {
		if err := db.RecordIssuance(ctx, cert(s, now), "", now); err != nil {
			t.Fatal(err)
		}
	}
	expired := cert("dd03", now)
	expired.NotAfter = now.Add(-time.Second)
	if err := db.RecordIssuance(ctx, expired, "", now); err != nil {
		t.Fatal(err)
	}
	r, err := db.RevokeSerial(ctx, "dd01", 1, now)
	if err != nil || r.AlreadyRevoked {
		t.Fatalf("revoke: %+v %v", r, err)
	}
	r, err = db.RevokeSerial(ctx, "dd01", 4, now.Add(time.Minute))
	if err != nil || !r.AlreadyRevoked {
		t.Fatalf("revoke twice: %+v %v", r, err)
	}
	c, _ := db.GetCertificate(ctx, "dd01")
	if !c.RevokedAt.Equal(now) || c.RevocationReason != 1 {
		t.Fatalf("second revocation changed the first: %+v", c)
	}
	if _, err := db.RevokeSerial(ctx, "ffff", 0, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown serial: %v", err)
	}
	revs, err := db.RevokeIdentity(ctx, "spiffe://example.org/web", 5, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 2 {
		t.Fatalf("revoke identity touched %d certificates, want the 2 unexpired: %+v", len(revs), revs)
	}
	c, _ = db.GetCertificate(ctx, "dd02")
	if !c.Revoked() || c.RevocationReason != 5 {
		t.Fatalf("dd02 not revoked: %+v", c)
	}
	c, _ = db.GetCertificate(ctx, "dd03")
	if c.Revoked() {
		t.Fatal("an expired certificate was revoked by identity")
	}
	if _, err := db.RevokeIdentity(ctx, "spiffe://example.org/nobody", 0, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown identity: %v", err)
	}
	valid, _ := db.ListCertificates(ctx, store.CertificateFilter{ValidAt: now})
	if len(valid) != 2 {
		t.Fatalf("valid filter: %d", len(valid))
	}
}

func testReopen(t *testing.T, kind string, open func(*testing.T) *store.DB) {
	var url string
	switch kind {
	case "sqlite":
		url = "sqlite:" + filepath.Join(t.TempDir(), "m.db")
	default:
		url = pgShared(t).NewDatabase(t)
	}
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := db.RecordIssuance(ctx, cert("ee01", now), "", now); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = store.Open(ctx, url)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db.Close()
	if _, err := db.GetCertificate(ctx, "ee01"); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "no store given"},
		{"mysql://x", "unsupported scheme"},
		{"sqlite:/nonexistent-dir/x.db", "nonexistent-dir"},
		{"postgres://u:secret@127.0.0.1:1/db?connect_timeout=2", "xxxxx"},
	} {
		_, err := store.Open(ctx, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error mentioning %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q) leaks the password: %v", tc.url, err)
		}
	}
}
