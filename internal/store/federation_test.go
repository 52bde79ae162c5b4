package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
)

// TestFederationContract: on SQLite and PostgreSQL, relationships and
// bundles are stored with their audit trail, a rollback is refused, and
// replicas storing the same bundle at once record one change.
func TestFederationContract(t *testing.T) {
	srv := pgtest.Start(t)
	for name, open := range map[string]func(t *testing.T) *store.DB{
		"sqlite": func(t *testing.T) *store.DB {
			db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "mutual.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
		"postgres": func(t *testing.T) *store.DB {
			db, err := store.Open(context.Background(), srv.NewDatabase(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	} {
		t.Run(name, func(t *testing.T) { testFederation(t, open(t)) })
	}
}

func testFederation(t *testing.T, db *store.DB) {
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Microsecond)
	f := store.Federation{TrustDomain: "partner.example", EndpointURL: "https://partner.example/bundle", Profile: "https_spiffe",
		EndpointSPIFFEID: "spiffe://partner.example/spire/server", CreatedAt: at, CreatedBy: "spiffe://home.example/admin/op"}
	initial := store.TrustBundle{TrustDomain: "partner.example", X509AuthoritiesPEM: "A", Fingerprints: []string{"a"}, UpdatedAt: at, UpdatedBy: f.CreatedBy}
	if err := db.CreateFederation(ctx, f, &initial); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateFederation(ctx, f, nil); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second CreateFederation = %v, want ErrAlreadyExists", err)
	}
	fs, err := db.ListFederations(ctx)
	if err != nil || len(fs) != 1 || fs[0].EndpointSPIFFEID != f.EndpointSPIFFEID || !fs[0].CreatedAt.Equal(at) || !fs[0].LastAttempt.IsZero() {
		t.Fatalf("ListFederations = %+v, %v", fs, err)
	}
	if err := db.RecordFederationAttempt(ctx, "partner.example", at, "down"); err != nil {
		t.Fatal(err)
	}
	if fs, _ := db.ListFederations(ctx); fs[0].LastError != "down" || !fs[0].LastAttempt.Equal(at) {
		t.Errorf("after a failed attempt: %+v", fs[0])
	}

	next := store.TrustBundle{TrustDomain: "partner.example", Sequence: 5, RefreshHint: time.Minute, X509AuthoritiesPEM: "AB",
		Fingerprints: []string{"a", "b"}, UpdatedAt: at, UpdatedBy: "federation:https://partner.example/bundle"}
	// Replicas fetching the same bundle at once: one change.
	var wg sync.WaitGroup
	changed := make(chan bool, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := db.SetBundle(ctx, next)
			if err != nil {
				t.Error(err)
			}
			changed <- c
		}()
	}
	wg.Wait()
	close(changed)
	n := 0
	for c := range changed {
		if c {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d of 4 concurrent SetBundle calls reported a change, want 1", n)
	}
	rollback := next
	rollback.Sequence, rollback.Fingerprints, rollback.X509AuthoritiesPEM = 4, []string{"c"}, "C"
	if _, err := db.SetBundle(ctx, rollback); !errors.Is(err, store.ErrStaleBundle) {
		t.Errorf("SetBundle of an older sequence = %v, want ErrStaleBundle", err)
	}
	rollback.Sequence = 5
	if _, err := db.SetBundle(ctx, rollback); !errors.Is(err, store.ErrStaleBundle) {
		t.Errorf("SetBundle of other keys under the same sequence = %v, want ErrStaleBundle", err)
	}
	b, err := db.GetBundle(ctx, "partner.example")
	if err != nil || b.Sequence != 5 || b.RefreshHint != time.Minute || b.X509AuthoritiesPEM != "AB" {
		t.Errorf("GetBundle = %+v, %v", b, err)
	}

	if err := db.DeleteFederation(ctx, "partner.example", "spiffe://home.example/admin/op", at); err != nil {
		t.Fatal(err)
	}
	if _, err := db.GetBundle(ctx, "partner.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bundle after DeleteFederation: %v, want ErrNotFound", err)
	}
	if err := db.DeleteFederation(ctx, "partner.example", "x", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteFederation = %v, want ErrNotFound", err)
	}
	cs, err := db.ListBundleChanges(ctx, "partner.example")
	if err != nil || len(cs) != 3 {
		t.Fatalf("changes = %+v, %v; want added, updated, removed", cs, err)
	}
	if cs[0].Action != store.ActionFederationAdded || cs[0].By != f.CreatedBy || len(cs[0].Added) != 1 ||
		cs[1].Action != store.ActionBundleUpdated || cs[1].Sequence != 5 || len(cs[1].Added) != 1 || cs[1].Added[0] != "b" ||
		cs[2].Action != store.ActionFederationRemoved || len(cs[2].Removed) != 2 {
		t.Errorf("changes = %+v", cs)
	}
}
