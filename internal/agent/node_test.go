package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// enroll obtains an identity with a fresh join token for id.
func enroll(t *testing.T, e *testenv.CA, id string) *identity.Identity {
	t.Helper()
	enr, err := client.RequestIdentity(context.Background(), e.Token(t, id, api.TokenRequest{}), pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatalf("enroll %s: %v", id, err)
	}
	return enr.Identity
}

func clientAs(t *testing.T, e *testenv.CA, id *identity.Identity) *client.Client {
	t.Helper()
	var cert *tls.Certificate
	if id != nil {
		tc := id.TLSCertificate()
		cert = &tc
	}
	c, err := client.New([]string{e.URL}, []*x509.Certificate{e.Root}, cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestNodeCannotObtainAnotherNodesIdentity: whatever a node asks, the CA
// issues only the identities that entries grant to that node. Node b,
// holding a valid node certificate, is refused node a's entry (by ID, with a
// CSR naming the identity, by a raw HTTP request), does not see it listed,
// and a workload certificate cannot act as a node at all.
func TestNodeCannotObtainAnotherNodesIdentity(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	ctx := context.Background()
	nodeA := enroll(t, e, td+"/node/a")
	nodeB := enroll(t, e, td+"/node/b")
	secret := td + "/ns/prod/only-on-a"
	en := entry(t, e, secret, td+"/node/a", 0, nil, "unix:uid:0")
	shared := entry(t, e, td+"/ns/prod/everywhere", td+"/node/*", 0, nil, "unix:uid:0")
	ca, cb := clientAs(t, e, nodeA), clientAs(t, e, nodeB)

	// Node a is granted it (the control).
	got, err := ca.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil)})
	if err != nil {
		t.Fatalf("node a, its own entry: %v", err)
	}
	if got.SPIFFEID != secret {
		t.Fatalf("node a got %s, want %s", got.SPIFFEID, secret)
	}

	// Node b is refused, however it asks.
	_, err = cb.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil)})
	wantAPIError(t, "node b asks for a's entry", err, http.StatusForbidden, "entry_not_granted")
	_, err = cb.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil, secret)})
	wantAPIError(t, "node b asks for a's entry with a CSR naming its identity", err, http.StatusForbidden, "entry_not_granted")
	_, err = cb.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: "0000000000000000", CSR: testca.CSR(t, nil, secret)})
	wantAPIError(t, "node b asks for an entry that does not exist", err, http.StatusForbidden, "entry_not_granted")
	// A shared entry cannot be stretched to another identity by the CSR.
	_, err = cb.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: shared.ID, CSR: testca.CSR(t, nil, secret)})
	if err == nil {
		t.Fatal("node b obtained a's identity by naming it in the CSR of a shared entry")
	}
	if got, err := cb.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: shared.ID, CSR: testca.CSR(t, nil)}); err != nil || got.SPIFFEID != shared.SPIFFEID {
		t.Fatalf("node b, shared entry: %+v %v", got, err)
	}

	// A raw, hand-made request with b's certificate.
	raw := func(id *identity.Identity, body string) (int, api.Error) {
		t.Helper()
		cfg := &tls.Config{RootCAs: id.RootPool(), Certificates: []tls.Certificate{id.TLSCertificate()}, MinVersion: tls.VersionTLS12}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		defer hc.CloseIdleConnections()
		resp, err := hc.Post(e.URL+"/v1/node/svid", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var ae api.Error
		json.Unmarshal(b, &ae)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("hand-made request answered 200: %s", b)
		}
		return resp.StatusCode, ae
	}
	body, _ := json.Marshal(api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil, secret)})
	if st, ae := raw(nodeB, string(body)); st != http.StatusForbidden || ae.Code != "entry_not_granted" {
		t.Errorf("raw request from b: HTTP %d %+v", st, ae)
	}
	// Extra fields (a node claiming to be a) are not honoured either.
	forged := strings.Replace(string(body), "{", fmt.Sprintf(`{"node_id":%q,"spiffe_id":%q,`, td+"/node/a", secret), 1)
	if st, ae := raw(nodeB, forged); st/100 != 4 {
		t.Errorf("raw request from b with forged fields: HTTP %d %+v", st, ae)
	}

	// b's entry list does not show a's entry; a's does.
	list, err := cb.NodeEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range list.Entries {
		if x.ID == en.ID || x.SPIFFEID == secret {
			t.Errorf("node b's entries list a's entry %s (%s)", x.ID, x.SPIFFEID)
		}
	}
	if len(list.Entries) != 1 || list.Entries[0].ID != shared.ID {
		t.Errorf("node b's entries: %+v, want only the shared one", list.Entries)
	}
	listA, err := ca.NodeEntries(ctx)
	if err != nil || len(listA.Entries) != 2 {
		t.Fatalf("node a's entries: %+v %v", listA, err)
	}

	// A workload certificate is not a node.
	web := enroll(t, e, td+"/ns/prod/web")
	cw := clientAs(t, e, web)
	_, err = cw.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil)})
	wantAPIError(t, "a workload certificate calls /v1/node/svid", err, http.StatusForbidden, "node_required")
	_, err = cw.NodeEntries(ctx)
	wantAPIError(t, "a workload certificate calls /v1/node/entries", err, http.StatusForbidden, "node_required")
	// Neither is the operator.
	_, err = e.Admin.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil)})
	wantAPIError(t, "the admin calls /v1/node/svid", err, http.StatusForbidden, "node_required")
	// Nor a caller without a certificate.
	_, err = clientAs(t, e, nil).NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil)})
	wantAPIError(t, "no client certificate", err, http.StatusUnauthorized, "node_required")

	// A revoked node is refused too.
	if _, err := e.Admin.Revoke(ctx, api.RevokeRequest{SPIFFEID: td + "/node/a"}); err != nil {
		t.Fatal(err)
	}
	_, err = ca.NodeSVID(ctx, api.NodeSVIDRequest{EntryID: en.ID, CSR: testca.CSR(t, nil)})
	if err == nil {
		t.Fatal("a revoked node still obtains workload certificates")
	}
}
