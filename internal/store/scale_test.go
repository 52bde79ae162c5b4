package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScale loads a SQLite store with MUTUAL_SCALE_CERTS certificates
// (default 1,000,000) of a tenth as many identities, 1% of them revoked,
// then times what an operator and a relying party do with it: certificate
// list pages (newest, by identity, valid only, a deep page by cursor), CRL
// regeneration (the store's read and the signing) and an OCSP lookup. It
// checks that every one of those queries is answered through an index
// (EXPLAIN QUERY PLAN shows no full scan of certificates), and logs the
// figures. Loading takes minutes, so it runs only when asked:
//
//	MUTUAL_SCALE=1 go test -run TestScale -v -timeout 30m ./internal/store
func TestScale(t *testing.T) {
	if testing.Short() || os.Getenv("MUTUAL_SCALE") == "" {
		t.Skip("set MUTUAL_SCALE=1 to load a million certificates (minutes; not part of the default run)")
	}
	n := 1_000_000
	if v := os.Getenv("MUTUAL_SCALE_CERTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			t.Fatalf("MUTUAL_SCALE_CERTS=%q: want a number of certificates, at least 1000", v)
		}
	}
	ids := n / 10
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "scale.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	start := time.Now()
	scaleLoad(t, db, n, ids, now)
	t.Logf("loaded %d certificates of %d identities in %s", n, ids, time.Since(start).Round(time.Millisecond))

	id := fmt.Sprintf("spiffe://example.org/w/%d", ids/2)
	first, err := db.ListCertificates(ctx, CertificateFilter{Limit: 100})
	if err != nil || len(first) != 100 {
		t.Fatalf("first page: %d certificates, %v", len(first), err)
	}
	deep := first[len(first)-1].Cursor()
	pages := map[string]CertificateFilter{
		"newest page":      {Limit: 100},
		"by identity":      {SPIFFEID: id, Limit: 100},
		"valid only":       {ValidAt: now, Limit: 100},
		"next page":        {After: deep, Limit: 100},
		"identity, valid":  {SPIFFEID: id, ValidAt: now, Limit: 100},
		"default (1000)":   {},
		"valid, next page": {ValidAt: now, After: deep, Limit: 100},
	}
	for name, f := range listFilters(now, deep) {
		pages[name] = f
	}
	for name, f := range pages {
		q, args := db.listCertificatesQuery(f)
		scaleNoScan(t, db, name, q, args)
		el, got := scaleTime(func() (int, error) { cs, err := db.ListCertificates(ctx, f); return len(cs), err })
		t.Logf("list %-18s %4d rows in %s", name+":", got, el)
	}

	scaleNoScan(t, db, "CRL", db.q.rebind(revokedUnexpiredQuery), []any{toUS(now)})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuer := &x509.Certificate{SerialNumber: big.NewInt(1), SubjectKeyId: []byte{1}, KeyUsage: x509.KeyUsageCRLSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	crlStart := time.Now()
	revoked, err := db.RevokedUnexpired(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	read := time.Since(crlStart)
	entries := make([]x509.RevocationListEntry, len(revoked))
	for i, r := range revoked {
		sn, _ := new(big.Int).SetString(r.Serial, 16)
		entries[i] = x509.RevocationListEntry{SerialNumber: sn, RevocationTime: r.RevokedAt, ReasonCode: r.Reason}
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour), RevokedCertificateEntries: entries}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CRL: %d revoked unexpired, read in %s, regenerated (read+sign) in %s, %d bytes", len(revoked), read.Round(time.Microsecond), time.Since(crlStart).Round(time.Microsecond), len(crl))

	serial := scaleSerial(n / 3)
	scaleNoScan(t, db, "OCSP", db.q.rebind("SELECT "+certSelect+" FROM certificates WHERE serial = ?"), []any{serial})
	el, _ := scaleTime(func() (int, error) { _, err := db.GetCertificate(ctx, serial); return 1, err })
	t.Logf("OCSP lookup (certificate by serial): %s", el)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("Go heap in use after the queries: %d MiB", ms.HeapInuse>>20)
}

// scaleTime runs f three times and returns the fastest run (the first warms
// SQLite's page cache, as a running CA's is) and its row count.
func scaleTime(f func() (int, error)) (time.Duration, int) {
	best, rows := time.Duration(1<<62), 0
	for range 3 {
		s := time.Now()
		got, err := f()
		if el := time.Since(s); err == nil && el < best {
			best, rows = el, got
		}
	}
	return best.Round(time.Microsecond), rows
}

// scaleNoScan fails when SQLite plans a full scan of certificates for q
// (a scan along an index is fine: LIMIT stops it).
func scaleNoScan(t *testing.T, db *DB, name, q string, args []any) {
	t.Helper()
	rows, err := db.reader.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("%s: explain: %v", name, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	p := strings.Join(plan, "; ")
	t.Logf("plan %-18s %s", name+":", p)
	for _, d := range plan {
		if strings.HasPrefix(d, "SCAN certificates") && !strings.Contains(d, "INDEX") {
			t.Errorf("%s: full scan of certificates (%s); add an index", name, p)
		}
	}
}

func scaleSerial(i int) string { return fmt.Sprintf("%016x", 0x1000000000000000+i) }

// scaleLoad inserts n certificates of ids identities, issued one a second
// up to now, half of them expired, one in a hundred revoked, in batches.
func scaleLoad(t testing.TB, db *DB, n, ids int, now time.Time) {
	t.Helper()
	ctx := context.Background()
	der := make([]byte, 300) // a leaf's size; the queries never parse it
	const batch = 10_000
	for lo := 0; lo < n; lo += batch {
		tx, err := db.writer.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := tx.Prepare(db.q.rebind(`INSERT INTO certificates (serial, spiffe_id, not_before_us, not_after_us, issued_at_us, der,
			requested_by, revoked_at_us, revocation_reason, node_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`))
		if err != nil {
			t.Fatal(err)
		}
		for i := lo; i < min(lo+batch, n); i++ {
			issued := now.Add(-time.Duration(n-i) * time.Second)
			notAfter := issued.Add(time.Duration(n/2) * time.Second)
			var revoked, reason any
			if i%100 == 0 {
				revoked, reason = toUS(issued.Add(time.Second)), 1
			}
			var node any
			if i%10 == 0 {
				node = fmt.Sprintf("spiffe://example.org/node/%d", i%1000)
			}
			if _, err := st.Exec(scaleSerial(i), fmt.Sprintf("spiffe://example.org/w/%d", i%ids), toUS(issued.Add(-time.Minute)),
				toUS(notAfter), toUS(issued), der, "bench", revoked, reason, node); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.writer.Exec("ANALYZE"); err != nil {
		t.Fatal(err)
	}
}
