package publish_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// escapeRounds is how many times each race is run against one CA.
const escapeRounds = 8

// TestRenewingConcurrentlyCannotEscapeRevocation attacks the boundary
// between issuance and revocation: many renewals (and, for a node, workload
// certificates obtained through it) are in flight while `cert revoke
// --identity` or `--node` runs. Once the revocation has answered, every
// certificate of that identity or node the CA ever returned must be on the
// CRL and revoked in OCSP, and no renewal or node request may succeed, with
// any of them. The same holds for `cert revoke --serial` and every renewal
// descending from that serial. Before the fix the check "not revoked" was a read before the
// issuing transaction, and a renewal committed just after the revocation
// escaped it and renewed forever.
func TestRenewingConcurrentlyCannotEscapeRevocation(t *testing.T) {
	for name, storeURL := range map[string]func(t *testing.T) string{
		"sqlite":   func(*testing.T) string { return "" },
		"postgres": func(t *testing.T) string { return pgtest.Start(t).NewDatabase(t) },
	} {
		t.Run(name, func(t *testing.T) {
			e := startCA(t, storeURL(t))
			for round := range escapeRounds {
				e.raceIdentityRevocation(t, round)
				e.raceNodeRevocation(t, round)
				e.raceSerialRevocation(t, round)
				if t.Failed() {
					return
				}
			}
		})
	}
}

// escapeRace collects what the CA returned during one race and what went wrong.
type escapeRace struct {
	e *caEnv
	// started is set when the revocation is sent, revoked once it has
	// answered success.
	started, revoked atomic.Bool
	ok               atomic.Int64

	mu       sync.Mutex
	issued   []*identity.Identity
	failures []string
	wg       sync.WaitGroup
}

func (r *escapeRace) add(id *identity.Identity) {
	r.mu.Lock()
	r.issued = append(r.issued, id)
	r.mu.Unlock()
	r.ok.Add(1)
}

func (r *escapeRace) fail(format string, a ...any) {
	r.mu.Lock()
	r.failures = append(r.failures, fmt.Sprintf(format, a...))
	r.mu.Unlock()
}

// refusal checks that err is the CA refusing (403), not a transport failure.
func (r *escapeRace) refusal(what string, err error) {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		r.fail("%s: want a 403 refusal, got %v", what, err)
	}
}

// renewChain renews cur over /v1/renew, then the certificate it got, and so
// on, until the CA refuses. A renewal that started after the revocation
// answered and still succeeded is an escape.
func (r *escapeRace) renewChain(ctx context.Context, cur *identity.Identity) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for ctx.Err() == nil {
			after := r.revoked.Load()
			next, err := client.RenewIdentity(ctx, cur, []string{r.e.URL}, "", 0)
			if err != nil {
				if !r.started.Load() {
					r.fail("renewal of %s refused before any revocation: %v", serialOf(cur.Leaf()), err)
				} else {
					r.refusal("renewal of "+serialOf(cur.Leaf()), err)
				}
				return
			}
			r.add(next)
			if after {
				r.fail("ESCAPE: renewal of %s (%s) started after the revocation (or entry deletion) answered and was issued %s", serialOf(cur.Leaf()), cur.ID, serialOf(next.Leaf()))
				return
			}
			cur = next
		}
	}()
}

// nodeSVIDs asks, as node, for workload certificates of entryID until refused.
func (r *escapeRace) nodeSVIDs(ctx context.Context, node *identity.Identity, entryID string) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		cl := nodeClient(r.e, node)
		defer cl.CloseIdleConnections()
		for ctx.Err() == nil {
			after := r.revoked.Load()
			wl, err := obtainSVID(ctx, cl, node, entryID)
			if err != nil {
				if !r.started.Load() {
					r.fail("node %s refused a workload certificate before any revocation: %v", serialOf(node.Leaf()), err)
				} else {
					r.refusal("node request with "+serialOf(node.Leaf()), err)
				}
				return
			}
			r.add(wl)
			if after {
				r.fail("ESCAPE: node %s obtained %s after its revocation answered", serialOf(node.Leaf()), serialOf(wl.Leaf()))
				return
			}
		}
	}()
}

func nodeClient(e *caEnv, node *identity.Identity) *client.Client {
	tc := node.TLSCertificate()
	cl, err := client.New([]string{e.URL}, node.Roots, &tc)
	if err != nil {
		panic(err)
	}
	return cl
}

// obtainSVID asks the CA, as the node behind cl does, for the identity of
// entryID, with a key kept so that the workload can renew it itself.
func obtainSVID(ctx context.Context, cl *client.Client, node *identity.Identity, entryID string) (*identity.Identity, error) {
	key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	resp, err := cl.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: entryID, CSR: string(pki.EncodeCSR(der))})
	if err != nil {
		return nil, err
	}
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		return nil, err
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	return &identity.Identity{ID: id, Chain: chain, Key: key, Roots: node.Roots}, nil
}

// revokeMidway waits until the racers have had some success, revokes, and
// marks the moment the revocation answered.
func (r *escapeRace) revokeMidway(t *testing.T, req api.RevokeRequest, racers int) {
	t.Helper()
	r.midway(t, racers, fmt.Sprintf("revoke %+v", req), func() error {
		_, err := r.e.Admin.Revoke(context.Background(), req)
		return err
	})
}

// midway waits until the racers have had some success, then runs act and
// marks the moment it answered.
func (r *escapeRace) midway(t *testing.T, racers int, what string, act func() error) {
	t.Helper()
	testwait.Eventually(t, func() bool { return r.ok.Load() >= int64(2*racers) }, "the racers obtained no certificates")
	r.started.Store(true)
	if err := act(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	r.revoked.Store(true)
}

// check waits for the racers and then proves that nothing of what the CA
// returned is still good: on the CRL, revoked in OCSP, refused for renewal
// (and, for node certificates, refused for node requests).
func (r *escapeRace) check(t *testing.T, what string, entryID string) {
	t.Helper()
	r.wg.Wait()
	for _, f := range r.failures {
		t.Errorf("%s: %s", what, f)
	}
	crl, _ := r.e.fetchCRL(t)
	if err := crl.CheckSignatureFrom(r.e.Intermediate); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range r.issued {
		leaf := id.Leaf()
		if _, ok := crlHas(crl, leaf); !ok {
			t.Errorf("%s: ESCAPE: %s (%s, issued during the race) is not on the CRL after the revocation answered", what, serialOf(leaf), id.ID)
		}
		req, _ := ocsp.CreateRequest(leaf, r.e.Intermediate, nil)
		resp, err := ocsp.ParseResponseForCert(ocspPost(t, r.e.ocspURL(), req), leaf, r.e.Intermediate)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != ocsp.Revoked {
			t.Errorf("%s: ESCAPE: OCSP says %d (not revoked) for %s (%s)", what, resp.Status, serialOf(leaf), id.ID)
		}
		if next, err := client.RenewIdentity(ctx, id, []string{r.e.URL}, "", 0); err == nil {
			t.Errorf("%s: ESCAPE: %s (%s) still renews after the revocation: got %s", what, serialOf(leaf), id.ID, serialOf(next.Leaf()))
		}
		if entryID != "" && strings.HasPrefix(id.ID.Path(), "/node/") {
			cl := nodeClient(r.e, id)
			if wl, err := obtainSVID(ctx, cl, id, entryID); err == nil {
				t.Errorf("%s: ESCAPE: node certificate %s still obtains workload certificates: got %s", what, serialOf(leaf), serialOf(wl.Leaf()))
			}
			cl.CloseIdleConnections()
		}
	}
}

// raceIdentityRevocation: several chains of renewals of one identity race
// `cert revoke --identity`.
func (e *caEnv) raceIdentityRevocation(t *testing.T, round int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := fmt.Sprintf("spiffe://example.org/race/identity-%d", round)
	first := e.Enroll(t, id, api.TokenRequest{})
	r := &escapeRace{e: e}
	r.issued = append(r.issued, first)
	const racers = 6
	for range racers {
		r.renewChain(ctx, first)
	}
	r.revokeMidway(t, api.RevokeRequest{SPIFFEID: id}, racers)
	r.check(t, fmt.Sprintf("round %d, revoke --identity %s", round, id), "")
}

// raceNodeRevocation: the node renews itself, obtains workload certificates
// through an entry, and those workloads renew themselves, all while
// `cert revoke --node` runs.
func (e *caEnv) raceNodeRevocation(t *testing.T, round int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodeName := fmt.Sprintf("spiffe://example.org/node/race-%d", round)
	wlName := fmt.Sprintf("spiffe://example.org/race/workload-%d", round)
	node := e.Enroll(t, nodeName, api.TokenRequest{})
	entry, err := e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: wlName, Nodes: []string{nodeName}, Selectors: []string{"unix:uid:1000"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &escapeRace{e: e}
	r.issued = append(r.issued, node)
	cl := nodeClient(e, node)
	defer cl.CloseIdleConnections()
	var workloads []*identity.Identity
	for range 2 {
		wl, err := obtainSVID(ctx, cl, node, entry.ID)
		if err != nil {
			t.Fatal(err)
		}
		workloads = append(workloads, wl)
		r.issued = append(r.issued, wl)
	}
	const racers = 6
	r.renewChain(ctx, node)
	r.renewChain(ctx, node)
	r.nodeSVIDs(ctx, node, entry.ID)
	r.nodeSVIDs(ctx, node, entry.ID)
	r.renewChain(ctx, workloads[0])
	r.renewChain(ctx, workloads[1])
	r.revokeMidway(t, api.RevokeRequest{Node: nodeName}, racers)
	r.check(t, fmt.Sprintf("round %d, revoke --node %s", round, nodeName), entry.ID)
}

// raceSerialRevocation: chains of renewals descending from one certificate
// race `cert revoke --serial` of it: its whole lineage must be revoked.
func (e *caEnv) raceSerialRevocation(t *testing.T, round int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := fmt.Sprintf("spiffe://example.org/race/serial-%d", round)
	first := e.Enroll(t, id, api.TokenRequest{})
	r := &escapeRace{e: e}
	r.issued = append(r.issued, first)
	const racers = 4
	for range racers {
		r.renewChain(ctx, first)
	}
	r.revokeMidway(t, api.RevokeRequest{Serial: serialOf(first.Leaf())}, racers)
	r.check(t, fmt.Sprintf("round %d, revoke --serial %s", round, serialOf(first.Leaf())), "")
}

// TestDeletedEntryStopsRenewal: a workload certificate obtained through a
// node (as the agent does, POST /v1/node/svid) renews itself over
// /v1/renew while its entry grants it; once the entry is deleted, that
// certificate and its renewals are refused, even when another entry grants
// the same identity to another node, and even for renewals that were under
// way while the entry was deleted.
func TestDeletedEntryStopsRenewal(t *testing.T) {
	for name, storeURL := range map[string]func(t *testing.T) string{
		"sqlite":   func(*testing.T) string { return "" },
		"postgres": func(t *testing.T) string { return pgtest.Start(t).NewDatabase(t) },
	} {
		t.Run(name, func(t *testing.T) { deletedEntryStopsRenewal(t, startCA(t, storeURL(t))) })
	}
}

func deletedEntryStopsRenewal(t *testing.T, e *caEnv) {
	ctx := context.Background()
	const node, wlName = "spiffe://example.org/node/entry-test", "spiffe://example.org/ns/prod/entry-test"
	nodeID := e.Enroll(t, node, api.TokenRequest{})
	entry, err := e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: wlName, Nodes: []string{node}, Selectors: []string{"unix:uid:1000"}})
	if err != nil {
		t.Fatal(err)
	}
	// Another entry grants the same identity elsewhere: it must not keep
	// this node's certificates alive.
	if _, err := e.Admin.CreateEntry(ctx, api.EntryRequest{SPIFFEID: wlName, Nodes: []string{"spiffe://example.org/node/elsewhere"}, Selectors: []string{"unix:uid:1000"}}); err != nil {
		t.Fatal(err)
	}
	cl := nodeClient(e, nodeID)
	defer cl.CloseIdleConnections()
	svid, err := obtainSVID(ctx, cl, nodeID, entry.ID)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := client.RenewIdentity(ctx, svid, []string{e.URL}, "", 0)
	if err != nil {
		t.Fatalf("while its entry grants it, the workload certificate must renew: %v", err)
	}

	r := &escapeRace{e: e}
	const racers = 4
	for range racers {
		r.renewChain(context.Background(), renewed)
	}
	r.midway(t, racers, "delete entry "+entry.ID, func() error { return e.Admin.DeleteEntry(ctx, entry.ID) })
	r.wg.Wait()
	for _, f := range r.failures {
		t.Error(f)
	}
	for _, id := range append([]*identity.Identity{svid, renewed}, r.issued...) {
		_, err := client.RenewIdentity(ctx, id, []string{e.URL}, "", 0)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || ae.Code != "entry_not_granted" {
			t.Errorf("ESCAPE: %s (%s) after its entry was deleted: renewal answered %v, want 403 entry_not_granted", serialOf(id.Leaf()), id.ID, err)
		}
	}
	if _, err := obtainSVID(ctx, cl, nodeID, entry.ID); err == nil {
		t.Error("the node still obtains the identity of a deleted entry")
	}
}
