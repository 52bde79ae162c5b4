package store_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/procfs"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// TestScale loads the store of a running CA service with
// MUTUAL_SCALE_CERTS certificates (default 1,000,000) of a tenth as many
// identities, then with a hundredth as many, and measures on each what an
// operator and a relying party do: certificate list pages through the
// admin API (newest, by identity, by status, a page after the first and a
// deep page by cursor), CRL regeneration by the service's CRL code (the
// store's read and the signing) and its answer over HTTP after a
// revocation, OCSP answers over HTTP for serials not answered before, and
// the process's memory after it all. It fails when a query the store makes
// for them reads the whole certificates table, and logs the figures side by
// side: a list page or CRL that grows with the store, OCSP slower on the
// big store than on the small one, or memory that grows with it, is a
// finding (docs/benchmarks.md). SQLite, then PostgreSQL (a throwaway
// server). Loading takes minutes, so it runs only when asked:
//
//	MUTUAL_SCALE=1 go test -run TestScale -v -timeout 30m ./internal/store
//
// (-run TestScale/sqlite or TestScale/postgres for one store).
func TestScale(t *testing.T) {
	if testing.Short() || os.Getenv("MUTUAL_SCALE") == "" {
		t.Skip("set MUTUAL_SCALE=1 to load a million certificates (minutes; not part of the default run)")
	}
	n := 1_000_000
	if v := os.Getenv("MUTUAL_SCALE_CERTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100_000 {
			t.Fatalf("MUTUAL_SCALE_CERTS=%q: want a number of certificates, at least 100000", v)
		}
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			newURL := func(testing.TB) string { return "" } // SQLite in the CA's directory
			if backend == "postgres" {
				srv := pgtest.Start(t)
				newURL = srv.NewDatabase
			}
			var figs []scaleFigures
			for _, size := range []int{n / 100, n} {
				t.Run(strconv.Itoa(size), func(t *testing.T) { figs = append(figs, scaleMeasure(t, newURL(t), size, size == n)) })
			}
			if len(figs) == 2 {
				t.Logf("%s, %d vs %d certificates (load average %s):\n%s", backend, figs[0].n, figs[1].n,
					procfs.LoadAverage(), scaleTable(figs[0], figs[1]))
			}
		})
	}
}

// scaleFigures is what scaleMeasure found on one store.
type scaleFigures struct {
	n     int
	load  time.Duration
	names []string                 // the rows of the table, in order
	times map[string]time.Duration // by row
	rows  map[string]int           // certificates listed, CRL entries, by row
	heap  [2]uint64                // Go heap in use (after a GC) before and after the operations
	rss   [2]uint64                // the process's resident memory, likewise
}

func (f *scaleFigures) add(name string, d time.Duration, rows int) {
	f.names = append(f.names, name)
	f.times[name], f.rows[name] = d, rows
}

// scaleList is one list page the admin API offers: the query, and the
// store's filter it becomes (to see the store's plan for it).
type scaleList struct {
	name  string
	q     api.CertificateQuery
	valid bool // ?valid=true: unexpired, revoked or not
	f     store.CertificateFilter
}

// scaleLists are the pages measured on a store of n certificates of ids
// identities loaded at now. Deep pages start at a certificate half (or,
// for live ones, three quarters) of the way down the store, a row the
// listing before would have ended on.
func scaleLists(n, ids int, now time.Time) []scaleList {
	id := fmt.Sprintf("spiffe://example.org/w/%d", ids/2+1)
	soon := now.Add(api.DefaultExpiringWithin)
	deep := store.ScaleCursor(n/2, n, now)                        // revoked, expired
	live := store.ScaleCursor(3*n/4+1, n, now)                    // valid, not revoked
	expiring := store.ScaleCursor(n/2+min(n/4, 43_200)+1, n, now) // expires in about 12 hours
	toMidnight := now.Add(24 * time.Hour).UTC().Truncate(24 * time.Hour).Add(24*time.Hour + time.Minute).Sub(now)
	month := 31 * 24 * time.Hour
	valid, unrevoked := store.CertificateFilter{ValidAt: now}, store.CertificateFilter{ValidAt: now, Revoked: store.NotRevoked}
	return []scaleList{
		{name: "newest (default 1000)", f: store.CertificateFilter{}},
		{name: "newest", q: api.CertificateQuery{Limit: 100}, f: store.CertificateFilter{Limit: 100}},
		{name: "deep, by cursor", q: api.CertificateQuery{Limit: 100, After: deep.String()}, f: store.CertificateFilter{Limit: 100, After: deep}},
		{name: "by identity", q: api.CertificateQuery{SPIFFEID: id, Limit: 100}, f: store.CertificateFilter{SPIFFEID: id, Limit: 100}},
		{name: "by identity, valid", q: api.CertificateQuery{SPIFFEID: id, Status: api.StatusValid, Limit: 100},
			f: store.CertificateFilter{SPIFFEID: id, ValidAt: now, Revoked: store.NotRevoked, Limit: 100}},
		{name: "unexpired (valid=true)", valid: true, f: scaleFilter(valid, 100, store.Cursor{})},
		{name: "unexpired, deep", valid: true, q: api.CertificateQuery{After: live.String()}, f: scaleFilter(valid, 100, live)},
		{name: "status valid", q: api.CertificateQuery{Status: api.StatusValid, Limit: 100}, f: scaleFilter(unrevoked, 100, store.Cursor{})},
		{name: "status valid, deep", q: api.CertificateQuery{Status: api.StatusValid, Limit: 100, After: live.String()}, f: scaleFilter(unrevoked, 100, live)},
		{name: "status expiring", q: api.CertificateQuery{Status: api.StatusExpiring, Limit: 100},
			f: store.CertificateFilter{ValidAt: now, ExpiresBefore: soon, Revoked: store.NotRevoked, Limit: 100}},
		{name: "status expiring, deep", q: api.CertificateQuery{Status: api.StatusExpiring, Limit: 100, After: expiring.String()},
			f: store.CertificateFilter{ValidAt: now, ExpiresBefore: soon, Revoked: store.NotRevoked, Limit: 100, After: expiring}},
		// The expiring page reads the newest live rows of each day of
		// expiry in the window (UTC days); a window that ends just after
		// midnight makes its last day skip nearly a day of rows that
		// expire later: the worst time of day to ask. A 31-day window
		// holds every valid certificate here.
		{name: "status expiring, to 00:01", q: api.CertificateQuery{Status: api.StatusExpiring, ExpiringWithin: toMidnight, Limit: 100},
			f: store.CertificateFilter{ValidAt: now, ExpiresBefore: now.Add(toMidnight), Revoked: store.NotRevoked, Limit: 100}},
		{name: "status expiring, 31 days", q: api.CertificateQuery{Status: api.StatusExpiring, ExpiringWithin: month, Limit: 100},
			f: store.CertificateFilter{ValidAt: now, ExpiresBefore: now.Add(month), Revoked: store.NotRevoked, Limit: 100}},
		{name: "status revoked", q: api.CertificateQuery{Status: api.StatusRevoked, Limit: 100}, f: store.CertificateFilter{Revoked: store.OnlyRevoked, Limit: 100}},
		{name: "status revoked, deep", q: api.CertificateQuery{Status: api.StatusRevoked, Limit: 100, After: deep.String()},
			f: store.CertificateFilter{Revoked: store.OnlyRevoked, Limit: 100, After: deep}},
	}
}

// scaleFullScan says whether a plan of SQLite's or PostgreSQL's reads the
// whole certificates table (a walk along an index is fine: LIMIT stops it).
func scaleFullScan(plan string) bool {
	return strings.Contains(plan, "SCAN certificates") && !strings.Contains(plan, "INDEX") ||
		strings.Contains(plan, "Seq Scan on certificates")
}

func scaleFilter(f store.CertificateFilter, limit int, after store.Cursor) store.CertificateFilter {
	f.Limit, f.After = limit, after
	return f
}

// scaleMeasure starts a CA service, loads n certificates into its store
// (storeURL's, or SQLite) and measures it; with judgePlans, a query plan
// that reads the whole table is an error (on a small table it may be the
// best plan).
func scaleMeasure(t *testing.T, storeURL string, n int, judgePlans bool) scaleFigures {
	ctx := context.Background()
	ids := n / 10
	c := testenv.StartCA(t, testenv.Options{StoreURL: storeURL, HTTP: true})
	db := c.Store(t)
	now := time.Now()
	start := time.Now()
	store.ScaleLoad(t, db, 0, n, n, ids, now)
	f := scaleFigures{n: n, load: time.Since(start), times: map[string]time.Duration{}, rows: map[string]int{}}
	t.Logf("loaded %d certificates of %d identities in %s", n, ids, f.load.Round(time.Millisecond))
	f.heap[0], f.rss[0] = scaleMemory(t)

	for _, l := range scaleLists(n, ids, now) {
		plan := store.ScaleListPlan(t, db, l.f)
		if judgePlans && scaleFullScan(plan) {
			t.Errorf("list %s: reads every certificate: %s", l.name, plan)
		}
		t.Logf("plan %-24s %s", l.name+":", plan)
		var got int
		d := scaleBest(t, func() error {
			var page *api.CertificateList
			var err error
			if l.valid {
				page, err = c.Admin.CertificatesPage(ctx, "", true, 100, l.q.After)
			} else {
				page, err = c.Admin.CertificatesQuery(ctx, l.q)
			}
			if err == nil {
				got = len(page.Certificates)
			}
			return err
		})
		if sd := scaleBest(t, func() error { _, err := db.ListCertificates(ctx, l.f); return err }); sd > d/2 {
			t.Logf("list %s: the store's query alone takes %s of the API's %s", l.name, sd, d)
		}
		if got == 0 {
			t.Errorf("list %s: no certificates; the loaded store should have some for every page", l.name)
		}
		f.add("list: "+l.name, d, got)
	}

	crlPlan, ocspPlan := store.ScaleRevocationPlans(t, db, now)
	t.Logf("plan CRL: %s; plan OCSP: %s", crlPlan, ocspPlan)
	if judgePlans && (scaleFullScan(crlPlan) || scaleFullScan(ocspPlan)) {
		t.Errorf("the CRL's or OCSP's query reads every certificate: %s; %s", crlPlan, ocspPlan)
	}
	scaleOCSP(t, c, &f, n)
	scaleCRL(t, c, db, &f, n)
	f.heap[1], f.rss[1] = scaleMemory(t)
	t.Logf("memory: Go heap in use %d -> %d MiB, resident %d -> %d MiB (before -> after the operations)",
		f.heap[0]>>20, f.heap[1]>>20, f.rss[0]>>20, f.rss[1]>>20)
	return f
}

// scaleCRL times the CRL's regeneration by the service's code (a CRL
// builder with nothing cached: the store's read, then the signing), the
// read alone, and the service's answer on /crl after a revocation.
func scaleCRL(t *testing.T, c *testenv.CA, db *store.DB, f *scaleFigures, n int) {
	ctx := context.Background()
	var entries int
	build := scaleBest(t, func() error {
		der, _, err := (&publish.CRL{Issuer: c.Issuer, Store: db}).Current(ctx)
		if err == nil {
			entries, err = crlEntries(der)
		}
		return err
	})
	read := scaleBest(t, func() error { _, err := db.RevokedUnexpired(ctx, time.Now()); return err })
	// The oldest of them expire, one every 50 seconds, while the test runs.
	if want := n / 100; entries < want-want/10 || entries > want {
		t.Errorf("CRL: %d entries, want about the %d revoked unexpired certificates", entries, want)
	}
	f.add("CRL: store's read", read, entries)
	f.add("CRL: regenerate (read + sign)", build, entries)

	// The service's own CRL after a revocation: an unrevoked, unexpired
	// certificate each time, so the service must build it anew.
	url := c.HTTPURL + "/crl/" + revocation.IssuerKeyID(c.Issuer.Cert) + ".crl"
	var ds []time.Duration
	for k := range 5 {
		if _, err := c.Admin.Revoke(ctx, api.RevokeRequest{Serial: store.ScaleSerial(n - 3 - k)}); err != nil {
			t.Fatal(err)
		}
		s := time.Now()
		der, err := scaleGet(url)
		ds = append(ds, time.Since(s))
		if err == nil {
			entries, err = crlEntries(der)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	served := slices.Min(ds)
	f.add("CRL: GET after a revocation", served, entries)
}

func crlEntries(der []byte) (int, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return 0, fmt.Errorf("parse CRL: %w", err)
	}
	return len(crl.RevokedCertificateEntries), nil
}

// scaleOCSP asks the service's OCSP responder about 200 certificates
// spread over the store, each once (its cache would otherwise answer), and
// records the median and the 99th percentile answer.
func scaleOCSP(t *testing.T, c *testenv.CA, f *scaleFigures, n int) {
	var ds []time.Duration
	for k := range 200 {
		i := k*(n/200) + 3
		if k%10 == 0 {
			i = k * (n / 200) // one in fifty is revoked: a revoked answer now and then
		}
		sn, _ := new(big.Int).SetString(store.ScaleSerial(i), 16)
		req, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: sn}, c.Issuer.Cert, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := time.Now()
		resp, err := http.Post(c.HTTPURL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		der, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ds = append(ds, time.Since(s))
		if err != nil {
			t.Fatal(err)
		}
		r, err := ocsp.ParseResponse(der, c.Issuer.Cert)
		if err != nil {
			t.Fatalf("OCSP answer about %s: %v", store.ScaleSerial(i), err)
		}
		if want := map[bool]int{true: ocsp.Revoked, false: ocsp.Good}[i%50 == 0]; r.Status != want {
			t.Errorf("OCSP answer about %s: status %d, want %d", store.ScaleSerial(i), r.Status, want)
		}
	}
	slices.Sort(ds)
	f.add("OCSP: median answer", ds[len(ds)/2], len(ds))
	f.add("OCSP: p99 answer", ds[len(ds)*99/100], len(ds))
}

func scaleGet(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, err
}

// scaleBest runs op once to warm caches (a running CA's are warm), then
// five times, and returns the fastest run: on a shared machine other
// programs only ever add to a time.
func scaleBest(t *testing.T, op func() error) time.Duration {
	t.Helper()
	var ds []time.Duration
	for k := range 6 {
		s := time.Now()
		if err := op(); err != nil {
			t.Fatal(err)
		}
		if k > 0 {
			ds = append(ds, time.Since(s))
		}
	}
	return slices.Min(ds)
}

// scaleMemory returns the Go heap in use after a collection and the
// process's resident memory (VmRSS).
func scaleMemory(t *testing.T) (heap, rss uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	file, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for s := bufio.NewScanner(file); s.Scan(); {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return ms.HeapInuse, rss
}

// scaleTable is the Markdown table of small and big side by side.
func scaleTable(small, big scaleFigures) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| operation (fastest of 5; OCSP: of 200 serials) | %d | %d | ratio |\n| --- | --- | --- | --- |\n", small.n, big.n)
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
	}
	for _, name := range big.names {
		fmt.Fprintf(&b, "| %s | %s (%d) | %s (%d) | %.1fx |\n", name, ms(small.times[name]), small.rows[name],
			ms(big.times[name]), big.rows[name], float64(big.times[name])/float64(max(small.times[name], 1)))
	}
	mib := func(v uint64) string { return strconv.FormatUint(v>>20, 10) + " MiB" }
	fmt.Fprintf(&b, "| Go heap in use, before -> after | %s -> %s | %s -> %s | |\n", mib(small.heap[0]), mib(small.heap[1]), mib(big.heap[0]), mib(big.heap[1]))
	fmt.Fprintf(&b, "| resident memory, before -> after | %s -> %s | %s -> %s | |\n", mib(small.rss[0]), mib(small.rss[1]), mib(big.rss[0]), mib(big.rss[1]))
	fmt.Fprintf(&b, "| load (not an operation) | %s | %s | |\n", small.load.Round(time.Millisecond), big.load.Round(time.Millisecond))
	return b.String()
}
