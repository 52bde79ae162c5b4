package client_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// TestAdminCertificatesPagesAndRevocation: the admin calls an operator
// runs (list, page through, revoke) against a real CA: every page holds at
// most the page size, the pages together hold every certificate once, a
// revoked certificate is listed with its revocation, and a revocation of a
// serial the CA never issued is answered as an APIError.
func TestAdminCertificatesPagesAndRevocation(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	const web = "spiffe://example.org/ns/prod/web"
	var serials []string
	for range 5 {
		serials = append(serials, pki.FormatSerial(e.Enroll(t, web, api.TokenRequest{}).Leaf().SerialNumber))
	}
	all, err := e.Admin.ListCertificates(ctx, web, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Certificates) != len(serials) {
		t.Fatalf("listed %d certificates of %s, want %d", len(all.Certificates), web, len(serials))
	}
	var paged []string
	pages := 0
	err = e.Admin.ListAllCertificates(ctx, web, false, 2, func(l *api.CertificateList) error {
		pages++
		if len(l.Certificates) > 2 {
			t.Errorf("page %d holds %d certificates, more than the page size 2", pages, len(l.Certificates))
		}
		for _, c := range l.Certificates {
			paged = append(paged, c.Serial)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(paged)
	want := slices.Clone(serials)
	slices.Sort(want)
	if !slices.Equal(paged, want) || pages < 3 {
		t.Fatalf("paging by 2 gave %v in %d pages, want %v in at least 3", paged, pages, want)
	}
	stop := errors.New("stop")
	if err := e.Admin.ListAllCertificates(ctx, web, false, 2, func(*api.CertificateList) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("a page callback's error = %v, want it returned", err)
	}

	resp, err := e.Admin.Revoke(ctx, api.RevokeRequest{Serial: serials[0], Reason: "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Revoked) != 1 || resp.Revoked[0].Serial != serials[0] {
		t.Fatalf("revoke %s answered %+v", serials[0], resp.Revoked)
	}
	// validOnly selects unexpired certificates (revoked ones included),
	// each with its revocation state.
	valid, err := e.Admin.ListCertificates(ctx, web, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(valid.Certificates) != len(serials) {
		t.Fatalf("unexpired list holds %d certificates, want %d", len(valid.Certificates), len(serials))
	}
	for _, c := range valid.Certificates {
		if revoked := c.RevokedAt != nil; revoked != (c.Serial == serials[0]) {
			t.Errorf("certificate %s listed with revoked=%v (reason %q)", c.Serial, revoked, c.RevocationReason)
		}
	}
	_, err = e.Admin.Revoke(ctx, api.RevokeRequest{Serial: "0badc0ffee"})
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("revoking an unknown serial: %v, want an APIError", err)
	}
	if ae.Status < 400 || ae.Status >= 500 || ae.Code == "" || ae.Unavailable() {
		t.Fatalf("revoking an unknown serial: HTTP %d code %q, want a 4xx with a code, not worth a retry", ae.Status, ae.Code)
	}
}

// TestAdminEntriesRoundTrip: an entry created through the client is listed
// with what was asked for, and gone once deleted; deleting it again is an
// APIError that names HTTP 404.
func TestAdminEntriesRoundTrip(t *testing.T) {
	ctx := context.Background()
	e := testenv.StartCA(t, testenv.Options{})
	en, err := e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: "spiffe://example.org/ns/prod/web", Nodes: []string{"spiffe://example.org/node/n1"}, Selectors: []string{"unix:uid:1001"}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.Admin.ListEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Entries) != 1 || list.Entries[0].ID != en.ID || !slices.Equal(list.Entries[0].Selectors, []string{"unix:uid:1001"}) {
		t.Fatalf("entries = %+v, want the one created (%s)", list.Entries, en.ID)
	}
	if err := e.Admin.DeleteEntry(ctx, en.ID); err != nil {
		t.Fatal(err)
	}
	if list, err = e.Admin.ListEntries(ctx); err != nil || len(list.Entries) != 0 {
		t.Fatalf("after delete: %+v, %v", list, err)
	}
	var ae *client.APIError
	if err := e.Admin.DeleteEntry(ctx, en.ID); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("deleting a deleted entry: %v, want an APIError with HTTP 404", err)
	}
}
