package publish_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
)

const (
	nodeID     = "spiffe://example.org/node/n1"
	workloadID = "spiffe://example.org/ns/prod/api"
)

// nodeWorld is an enrolled node, an entry granting workloadID to it, and a
// workload certificate the node obtained for it.
type nodeWorld struct {
	node     *identity.Identity
	nodeCl   *client.Client
	entry    *api.Entry
	workload *x509.Certificate
}

func (e *caEnv) nodeWithWorkload(t testing.TB) *nodeWorld {
	t.Helper()
	ctx := context.Background()
	n := &nodeWorld{node: e.Enroll(t, nodeID, api.TokenRequest{})}
	var err error
	if n.entry, err = e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: workloadID, Nodes: []string{nodeID}, Selectors: []string{"unix:uid:1000"}}); err != nil {
		t.Fatal(err)
	}
	tc := n.node.TLSCertificate()
	if n.nodeCl, err = client.New([]string{e.URL}, n.node.Roots, &tc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.nodeCl.CloseIdleConnections)
	n.workload = n.svid(t)
	return n
}

// svid obtains a workload certificate as the node does.
func (n *nodeWorld) svid(t testing.TB) *x509.Certificate {
	t.Helper()
	resp, err := n.nodeCl.NodeSVID(context.Background(), api.NodeSVIDRequest{EntryID: n.entry.ID, CSR: csrPEM(t)})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		t.Fatal(err)
	}
	if resp.SPIFFEID != workloadID {
		t.Fatalf("node obtained %s, want %s", resp.SPIFFEID, workloadID)
	}
	return certs[0]
}

// TestRevokeNode: revoking a node revokes its certificate and every
// workload certificate obtained through it; OCSP and the feed say so, and
// the node can obtain no more.
func TestRevokeNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := startCA(t, "")
	n := e.nodeWithWorkload(t)
	bystander := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{}).Leaf()
	sub := e.Enroll(t, "spiffe://example.org/ns/prod/proxy", api.TokenRequest{})
	fs, err := e.subscribe(t, feedClient(sub.Roots, sub), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, hb := fs.untilHeartbeat(t)

	r, err := e.Admin.Revoke(ctx, api.RevokeRequest{Node: nodeID, Reason: "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, rv := range r.Revoked {
		got = append(got, rv.Serial)
		if rv.AlreadyRevoked {
			t.Fatalf("%s reported already revoked", rv.Serial)
		}
	}
	wantSerials := []string{serialOf(n.node.Leaf()), serialOf(n.workload)}
	sort.Strings(got)
	sort.Strings(wantSerials)
	if !slices.Equal(got, wantSerials) {
		t.Fatalf("revoked %v, want the node's and the workload's %v", got, wantSerials)
	}

	// The list shows both revoked, the bystander not.
	list, err := e.Admin.ListCertificates(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Certificates {
		revoked := c.RevokedAt != nil
		should := slices.Contains(wantSerials, c.Serial)
		if revoked != should {
			t.Errorf("%s (%s): revoked=%v, want %v", c.Serial, c.SPIFFEID, revoked, should)
		}
		if should && c.RevocationReason != "keyCompromise" {
			t.Errorf("%s: reason %q", c.Serial, c.RevocationReason)
		}
	}

	// OCSP says revoked for the workload certificate, good for the bystander.
	for _, tc := range []struct {
		cert *x509.Certificate
		want int
	}{{n.workload, ocsp.Revoked}, {n.node.Leaf(), ocsp.Revoked}, {bystander, ocsp.Good}} {
		req, _ := ocsp.CreateRequest(tc.cert, e.Intermediate, nil)
		resp, err := ocsp.ParseResponseForCert(ocspPost(t, e.ocspURL(), req), tc.cert, e.Intermediate)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != tc.want {
			t.Fatalf("OCSP for %s: status %d, want %d", serialOf(tc.cert), resp.Status, tc.want)
		}
	}

	// The feed delivers both, with the node named on the workload's event.
	var evs []revocation.Event
	for len(evs) < 2 {
		if ev := fs.next(t); !ev.Heartbeat {
			evs = append(evs, ev)
		}
	}
	checkEvents(t, evs, hb.Seq, wantSerials, map[string]string{serialOf(n.node.Leaf()): nodeID, serialOf(n.workload): workloadID})
	for _, ev := range evs {
		if ev.Serial == serialOf(n.workload) && ev.NodeID != nodeID {
			t.Fatalf("workload event names node %q, want %s", ev.NodeID, nodeID)
		}
		if ev.Reason != int(ocsp.KeyCompromise) {
			t.Fatalf("event %+v: reason %d", ev, ev.Reason)
		}
	}

	// The node can obtain no more workload certificates.
	if _, err := n.nodeCl.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: n.entry.ID, CSR: csrPEM(t)}); err == nil {
		t.Fatal("a revoked node still obtains workload certificates")
	}
	// Revoking the node again is harmless: already revoked, no new event.
	r2, err := e.Admin.Revoke(ctx, api.RevokeRequest{Node: nodeID})
	if err != nil || len(r2.Revoked) != 2 || !r2.Revoked[0].AlreadyRevoked || !r2.Revoked[1].AlreadyRevoked {
		t.Fatalf("second node revocation: %+v %v", r2, err)
	}
	fs2, err := e.subscribe(t, feedClient(sub.Roots, sub), hb.Seq)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := fs2.untilHeartbeat(t)
	checkEvents(t, again, hb.Seq, wantSerials, nil)
}

// TestRevokeNodeCoversRenewedWorkloadCertificates: a workload certificate
// obtained through a node can renew itself over mTLS (/v1/renew); the
// renewed certificate descends from the node too, and revoking the node must
// take it out as well, or holding a compromised node's workload keys
// survives the node's revocation.
func TestRevokeNodeCoversRenewedWorkloadCertificates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := startCA(t, "")
	n := e.nodeWithWorkload(t)
	// The workload's identity as it would hold it (key and chain): obtain one
	// with a key we keep.
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := n.nodeCl.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: n.entry.ID, CSR: string(pki.EncodeCSR(csr))})
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := pki.ParseCertificates([]byte(resp.ChainPEM))
	wlID, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	wl := &identity.Identity{ID: wlID, Chain: chain, Key: key, Roots: n.node.Roots}
	renewed, err := client.RenewIdentity(ctx, wl, []string{e.URL}, "", 0)
	if err != nil {
		t.Fatalf("the workload certificate cannot renew: %v", err)
	}
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{Node: nodeID, Reason: "keyCompromise"}); err != nil {
		t.Fatal(err)
	}
	req, _ := ocsp.CreateRequest(renewed.Leaf(), e.Intermediate, nil)
	r, err := ocsp.ParseResponseForCert(ocspPost(t, e.ocspURL(), req), renewed.Leaf(), e.Intermediate)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != ocsp.Revoked {
		t.Errorf("BUG: the renewal %s of workload certificate %s (obtained through %s) is still good after the node was revoked",
			serialOf(renewed.Leaf()), serialOf(chain[0]), nodeID)
	}
	if _, err := client.RenewIdentity(ctx, renewed, []string{e.URL}, "", 0); err == nil {
		t.Errorf("BUG: after revoking %s, a descendant of its workload certificate still renews", nodeID)
	}
}

// TestStoreRevocation: the store's revocation, on SQLite and PostgreSQL.
func TestStoreRevocation(t *testing.T) {
	t.Parallel()
	c := testca.New(t)
	for name, urls := range map[string]func(t *testing.T) func(t *testing.T) string{
		"sqlite": func(t *testing.T) func(t *testing.T) string {
			return func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "mutual.db") }
		},
		"postgres": func(t *testing.T) func(t *testing.T) string {
			pg := pgtest.Start(t)
			return func(t *testing.T) string { return pg.NewDatabase(t) }
		},
	} {
		t.Run(name, func(t *testing.T) {
			url := urls(t)
			open := func(t *testing.T) *store.DB {
				t.Helper()
				db, err := store.Open(context.Background(), url(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			}
			t.Run("by node", func(t *testing.T) { storeRevokeNode(t, c, open(t), name) })
			t.Run("concurrent revocations of one certificate", func(t *testing.T) { storeRevokeConcurrently(t, c, open(t)) })
		})
	}
}

// storeRevokeNode: the node's unexpired certificates and the unexpired
// workload certificates obtained through it, in one transaction, one event
// each; a second revocation adds no event; expired certificates are left
// alone and never reach the CRL.
func storeRevokeNode(t *testing.T, c *testca.CA, db *store.DB, name string) {
	ctx := context.Background()
	now := time.Now()
	record := func(id, node string, opts ...testca.LeafOption) *x509.Certificate {
		t.Helper()
		return recordLeaf(t, c, db, id, node, opts...)
	}
	nodeCert := record(nodeID, "")
	oldNode := record(nodeID, "", testca.Expired())
	wl1 := record(workloadID, nodeID)
	wl2 := record("spiffe://example.org/ns/prod/db", nodeID)
	expiredWL := record(workloadID, nodeID, testca.Expired())
	otherNodeWL := record(workloadID, "spiffe://example.org/node/n2")
	unrelated := record("spiffe://example.org/ns/prod/web", "")
	lookalike := record("spiffe://example.org/node/n10", "")

	if _, err := db.RevokeNode(ctx, "spiffe://example.org/node/none", 1, now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoking an unknown node: %v, want ErrNotFound", err)
	}
	before, _ := db.LastRevocationSeq(ctx)
	revs, err := db.RevokeNode(ctx, nodeID, 1, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{serialOf(nodeCert), serialOf(wl1), serialOf(wl2)}
	var got []string
	for _, r := range revs {
		got = append(got, r.Serial)
		if r.AlreadyRevoked {
			t.Fatalf("%s already revoked", r.Serial)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("revoked %v, want %v", got, want)
	}
	for _, l := range []*x509.Certificate{nodeCert, wl1, wl2} {
		rec, err := db.GetCertificate(ctx, serialOf(l))
		if err != nil || !rec.Revoked() || rec.RevocationReason != 1 {
			t.Fatalf("%s: %+v %v", serialOf(l), rec, err)
		}
	}
	for _, l := range []*x509.Certificate{oldNode, expiredWL, otherNodeWL, unrelated, lookalike} {
		rec, err := db.GetCertificate(ctx, serialOf(l))
		if err != nil || rec.Revoked() {
			t.Fatalf("%s (%s) revoked by the node's revocation: %+v %v", serialOf(l), rec.SPIFFEID, rec, err)
		}
	}
	evs, err := db.RevocationsSince(ctx, before, 100)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events: %+v %v", evs, err)
	}
	for i, ev := range evs {
		if ev.Seq != before+int64(i)+1 && name == "sqlite" {
			t.Fatalf("event seq %d at %d after %d", ev.Seq, i, before)
		}
		if ev.Reason != 1 || ev.NotAfter.IsZero() || !slices.Contains(want, ev.Serial) {
			t.Fatalf("event %+v", ev)
		}
		if ev.SPIFFEID != nodeID && ev.NodeID != nodeID {
			t.Fatalf("event %+v names neither the node nor it as the workload's node", ev)
		}
	}
	last, _ := db.LastRevocationSeq(ctx)
	if last != evs[2].Seq {
		t.Fatalf("LastRevocationSeq %d, last event %d", last, evs[2].Seq)
	}

	// Again: harmless, no new event, the first time and reason stand.
	revs, err = db.RevokeNode(ctx, nodeID, 4, now.Add(time.Minute))
	if err != nil || len(revs) != 3 {
		t.Fatalf("second revocation: %+v %v", revs, err)
	}
	for _, r := range revs {
		if !r.AlreadyRevoked {
			t.Fatalf("%s not marked already revoked", r.Serial)
		}
	}
	if l2, _ := db.LastRevocationSeq(ctx); l2 != last {
		t.Fatalf("a second revocation added events: %d → %d", last, l2)
	}
	rec, _ := db.GetCertificate(ctx, serialOf(wl1))
	if rec.RevocationReason != 1 || rec.RevokedAt.Sub(now).Abs() > time.Millisecond {
		t.Fatalf("the second revocation changed the first: %+v", rec)
	}

	// An expired certificate revoked by serial is recorded but never
	// listed on the CRL; the unexpired revoked ones are.
	if _, err := db.RevokeSerial(ctx, serialOf(expiredWL), 1, now); err != nil {
		t.Fatal(err)
	}
	crl := &publish.CRL{Issuer: c.Issuer, Store: db}
	der, seq, err := crl.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l3, _ := db.LastRevocationSeq(ctx); seq != l3 {
		t.Fatalf("CRL seq %d, store %d", seq, l3)
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := list.CheckSignatureFrom(c.Intermediate); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*x509.Certificate{nodeCert, wl1, wl2} {
		if _, ok := crlHas(list, l); !ok {
			t.Errorf("CRL lacks %s", serialOf(l))
		}
	}
	if _, ok := crlHas(list, expiredWL); ok {
		t.Errorf("CRL lists the expired %s", serialOf(expiredWL))
	}
	if len(list.RevokedCertificateEntries) != 3 {
		t.Errorf("CRL has %d entries, want 3", len(list.RevokedCertificateEntries))
	}
}

// recordLeaf issues a leaf for id from c and records it in db.
func recordLeaf(t *testing.T, c *testca.CA, db *store.DB, id, node string, opts ...testca.LeafOption) *x509.Certificate {
	t.Helper()
	l := c.Leaf(t, id, opts...).Leaf()
	if err := db.RecordIssuance(context.Background(), &store.Certificate{
		Serial: serialOf(l), SPIFFEID: id, NotBefore: l.NotBefore, NotAfter: l.NotAfter,
		IssuedAt: l.NotBefore.Add(pki.ClockSkew), DER: l.Raw, RequestedBy: "test", NodeID: node,
	}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	return l
}

// storeRevokeConcurrently: many revocations of one certificate at once
// record it once: one event, one caller told it revoked it, the first
// reason standing.
func storeRevokeConcurrently(t *testing.T, c *testca.CA, db *store.DB) {
	ctx := context.Background()
	l := recordLeaf(t, c, db, workloadID, "")
	before, _ := db.LastRevocationSeq(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			var revs []store.Revocation
			if i%2 == 0 {
				var r store.Revocation
				r, err = db.RevokeSerial(ctx, serialOf(l), 1, time.Now())
				revs = []store.Revocation{r}
			} else {
				revs, err = db.RevokeIdentity(ctx, workloadID, 1, time.Now())
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, r := range revs {
				if !r.AlreadyRevoked {
					fresh++
				}
			}
		}()
	}
	wg.Wait()
	if fresh != 1 {
		t.Fatalf("%d callers were told they revoked %s, want 1", fresh, serialOf(l))
	}
	evs, err := db.RevocationsSince(ctx, before, 100)
	if err != nil || len(evs) != 1 || evs[0].Serial != serialOf(l) {
		t.Fatalf("events after %d concurrent revocations: %+v %v", 16, evs, err)
	}
}
