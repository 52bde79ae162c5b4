package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestLogFindings: an admin (the monitor) reports findings and reads them
// back with who reported them; a workload can do neither, and a report
// without a rule or with too many findings is refused whole.
func TestLogFindings(t *testing.T) {
	ctx := context.Background()
	e := start(t, testca.New(t), "")
	f := api.Finding{Rule: "unexplained_identity", LogIndex: 3, SPIFFEID: "spiffe://example.org/ns/x", Serial: "0abc", Detail: "unknown token T9"}
	if err := e.Admin.ReportFindings(ctx, api.FindingsReport{Findings: []api.Finding{f}}); err != nil {
		t.Fatal(err)
	}
	got, err := e.Admin.LogFindings(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Total != 1 || len(got.Findings) != 1 {
		t.Fatalf("findings: %+v", got)
	}
	g := got.Findings[0]
	if g.Rule != f.Rule || g.LogIndex != 3 || g.Serial != f.Serial || g.Detail != f.Detail || g.Times != 1 ||
		!strings.HasPrefix(g.ReportedBy, "spiffe://example.org/admin/") || g.LastReported.IsZero() {
		t.Errorf("finding read back: %+v", g)
	}
	for name, bad := range map[string]api.FindingsReport{
		"no rule":        {Findings: []api.Finding{{LogIndex: 1}, f}},
		"too many":       {Findings: make([]api.Finding, api.MaxFindingsPerReport+1)},
		"negative index": {Findings: []api.Finding{{Rule: "x", LogIndex: -1}}},
	} {
		wantRefusal(t, name, e.Admin.ReportFindings(ctx, bad), http.StatusBadRequest, api.CodeBadRequest)
	}
	if got, _ := e.Admin.LogFindings(ctx, 0); got.Total != 1 {
		t.Errorf("a refused report recorded something: %+v", got)
	}
	wl := workloadClient(t, e)
	wantRefusal(t, "a workload's report", wl.ReportFindings(ctx, api.FindingsReport{Findings: []api.Finding{f}}), http.StatusForbidden, api.CodeAdminRequired)
	_, err = wl.LogFindings(ctx, 0)
	wantRefusal(t, "a workload's listing", err, http.StatusForbidden, api.CodeAdminRequired)
}

// TestVoidToken: an admin voids an unused join token, after which it
// enrolls no one; voiding it again, an unknown one or by a workload is
// refused with the reason.
func TestVoidToken(t *testing.T) {
	ctx := context.Background()
	e := start(t, testca.New(t), "")
	tok, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/web"})
	if err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, "a workload voiding", workloadClient(t, e).VoidToken(ctx, tok.ID), http.StatusForbidden, api.CodeAdminRequired)
	if err := e.Admin.VoidToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	_, err = client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	wantRefusal(t, "enrolling with a voided token", err, http.StatusUnauthorized, api.CodeTokenExpired)
	wantRefusal(t, "voiding it again", e.Admin.VoidToken(ctx, tok.ID), http.StatusBadRequest, api.CodeTokenExpired)
	wantRefusal(t, "an unknown token", e.Admin.VoidToken(ctx, "00000000deadbeef"), http.StatusNotFound, api.CodeTokenUnknown)
}
