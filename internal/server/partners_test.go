package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestSightingReportsAreRateLimited attacks the report endpoint with a
// flood from one workload: it is refused with 429, a code of its own and
// the limit named, before the store is written.
func TestSightingReportsAreRateLimited(t *testing.T) {
	ctx := context.Background()
	e := start(t, testca.New(t), "")
	cl := workloadClient(t, e)
	report := api.SightingReport{Seen: []api.Seen{{SPIFFEID: "spiffe://example.org/partner/acme/x", At: time.Now()}}}
	var err error
	for range 100 {
		if _, err = cl.ReportPartners(ctx, report); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("100 reports in a row from one workload were all accepted")
	}
	wantRefusal(t, "a flood of reports", err, http.StatusTooManyRequests, api.CodeSightingReportsTooFrequent)
	if !strings.Contains(err.Error(), "the limit is 10 at once, then one every 1s") {
		t.Errorf("refusal %q does not name the limit", err)
	}
}
