package partnerfeed_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/partnerfeed"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestFeedFailsClosed: before the CA has answered, every partner identity
// and every peer of another trust domain reaches nothing, and a report
// that fails installs nothing. (Reports that succeed are tested with a
// real CA in package caservice.)
func TestFeedFailsClosed(t *testing.T) {
	c := testca.New(t)
	dir := filepath.Join(t.TempDir(), "proxy")
	if err := c.Leaf(t, "spiffe://example.org/ns/prod/proxy").Save(dir); err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewDirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A CA address where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := &partnerfeed.Feed{CAURLs: []string{"https://" + addr}, Source: src}
	own := spiffeid.RequireTrustDomainFromString("example.org")
	check := func(when string) {
		for _, id := range []string{"spiffe://example.org/partner/acme/x", "spiffe://partner.example/any"} {
			if s, partner := f.Partners().Scope(own, spiffeid.RequireFromString(id)); !partner || s != nil {
				t.Errorf("%s, %s: partner %v, scope %v; want a partner reaching nothing", when, id, partner, s)
			}
		}
		if _, partner := f.Partners().Scope(own, spiffeid.RequireFromString("spiffe://example.org/ns/prod/web")); partner {
			t.Errorf("%s, a local workload is judged as a partner's", when)
		}
	}
	check("before any report")
	if f.Partners() != f.Partners() {
		t.Error("Partners returns a new value each call: proxies would decide again at every request")
	}
	f.Seen(spiffeid.RequireFromString("spiffe://example.org/partner/acme/x"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Sync(ctx); err == nil {
		t.Fatal("a report to a CA that does not answer succeeded")
	}
	check("after a failed report")
	if err := (&partnerfeed.Feed{Source: src}).Sync(ctx); err == nil {
		t.Error("a feed without a CA address reported")
	}
}
