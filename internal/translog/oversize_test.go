package translog_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
)

// TestOversizedEntry: C2SP entry bundles prefix each entry with a 16-bit
// length, so an entry must stay under 64 KiB. A join token with many long
// DNS names (the request fits the API's 64 KiB body limit) yields a
// certificate whose entry does not. The CA must either refuse it before
// anything is issued, or keep the log verifiable: never serve a bundle that
// no verifier can parse, which would hide the 255 other entries of its tile
// and stop the monitor for good.
func TestOversizedEntry(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	neighbour := e.Enroll(t, "spiffe://example.org/ns/prod/neighbour", api.TokenRequest{})
	label := strings.Repeat("a", 60)
	var names []string
	for i := 0; i < 240; i++ {
		names = append(names, fmt.Sprintf("n%03d.%s.%s.%s.%s", i, label, label, label, label))
	}
	var big *client.Enrollment
	tok, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/big", DNSNames: names})
	if err == nil {
		big, err = clientRequest(tok.Token)
	}
	var ae *client.APIError
	switch {
	case err == nil:
		t.Logf("issued a certificate of %d bytes with %d DNS names", len(big.Identity.Leaf().Raw), len(names))
	case errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500:
		t.Logf("refused: %v", err)
	default:
		t.Fatalf("a token or enrollment with %d long DNS names: %v; want a certificate or a clear 4xx refusal", len(names), err)
	}

	cp := e.settle(t)
	cl := e.logClient()
	if _, _, err := cl.ProveCertificate(ctx, cp, neighbour.Leaf()); err != nil {
		t.Errorf("a certificate logged before the oversized one can no longer be proven: %v", err)
	}
	if big != nil {
		if _, _, err := cl.ProveCertificate(ctx, cp, big.Identity.Leaf()); err != nil {
			t.Errorf("the oversized certificate was returned but cannot be proven in the log: %v", err)
		}
	}
	later := e.Enroll(t, "spiffe://example.org/ns/prod/later", api.TokenRequest{})
	cp = e.settle(t)
	if _, _, err := cl.ProveCertificate(ctx, cp, later.Leaf()); err != nil {
		t.Errorf("a certificate logged after the oversized one cannot be proven: %v", err)
	}
	me := newMonitor(t, e, "")
	if _, err := me.stepErr(t, true); err != nil {
		t.Errorf("the monitor cannot get past the oversized entry: %v", err)
	}
	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	if acp, err := a.checkpoint(); err != nil {
		t.Fatal(err)
	} else if _, err := a.entries(acp); err != nil {
		t.Errorf("the independent auditor cannot read the log: %v", err)
	}
}
