package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/store"
)

// fill records n certificates in the CA's store (rows only, as many
// enrollments would leave them; not in the issuance log), spread over
// workloads and nodes and expiring evenly over the next week, every 100th
// revoked.
func (e *env) fill(b testing.TB, n int) {
	b.Helper()
	ctx := context.Background()
	der := e.admin.Leaf().Raw
	db := e.ca.Store(b)
	now := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				id := fmt.Sprintf("spiffe://example.org/ns/team%d/svc%d", i%50, i%1000)
				if i%20 == 0 {
					id = fmt.Sprintf("spiffe://example.org/node/n%d", i%500)
				}
				c := &store.Certificate{Serial: fmt.Sprintf("7%031x", i), SPIFFEID: id, DER: der, RequestedBy: "token:bench",
					NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Duration(i) * 7 * 24 * time.Hour / time.Duration(n)), IssuedAt: now.Add(-time.Duration(n-i) * time.Millisecond)}
				if err := db.RecordIssuance(ctx, c, "", now); err != nil {
					errs <- err
					return
				}
				if i%100 == 0 {
					if _, err := db.RevokeSerial(ctx, c.Serial, 1, now); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for i := 1; i <= n; i++ {
		select {
		case work <- i:
		case err := <-errs:
			b.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkPages100k: each page of a CA holding 100,000 certificates.
func BenchmarkPages100k(b *testing.B) {
	e := newEnv(b)
	e.fill(b, 100_000)
	hc := &http.Client{Timeout: 5 * time.Minute}
	// A deep page: after the 50,000th newest certificate.
	deep := (&store.Certificate{Serial: fmt.Sprintf("7%031x", 50_000), IssuedAt: time.Now().Add(-50_000 * time.Millisecond)}).Cursor()
	pages := []string{"/", "/certificates", "/certificates?after=" + deep.String(), "/certificates?status=valid", "/certificates?status=expiring",
		"/certificates?status=revoked", "/certificates?status=revoked&after=" + deep.String(), "/certificates?q=7" + fmt.Sprintf("%031x", 4242),
		"/certificates?q=spiffe://example.org/ns/team2/svc2&status=valid", "/identities", "/nodes", "/log", "/federation"}
	for _, page := range pages {
		b.Run(page, func(b *testing.B) {
			for b.Loop() {
				resp, err := hc.Get(e.base + page)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", page, resp.StatusCode)
				}
			}
		})
	}
}
