package ca_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/token"
)

// TestEnroll: the certificate carries what the token granted (identity,
// names, roles, lifetime) and where to check its revocation, is stored with
// its log entry, and the token is spent.
func TestEnroll(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := e.token(t, ca.TokenRequest{ID: "spiffe://example.org/ns/prod/web", DNSNames: []string{"Web.Example.org"},
		IPAddresses: []string{"10.0.0.1"}, Roles: []string{"reader"}, CertTTL: 2 * time.Hour})
	_, req := csr(t, x509.CertificateRequest{DNSNames: []string{"web.example.org"}})
	is, err := e.a.Enroll(ctx, tok, req, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := leaf(t, is)
	if is.ID.String() != "spiffe://example.org/ns/prod/web" || len(c.URIs) != 1 || c.URIs[0].String() != is.ID.String() {
		t.Errorf("identity %s, URIs %v", is.ID, c.URIs)
	}
	if !slices.Equal(c.DNSNames, []string{"web.example.org"}) || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("names %q %v, want the token's (DNS lower-cased)", c.DNSNames, c.IPAddresses)
	}
	if got := identity.Roles(c); !slices.Equal(got, []string{"reader"}) {
		t.Errorf("roles %q, want [reader]", got)
	}
	if life := c.NotAfter.Sub(e.now); life != 2*time.Hour {
		t.Errorf("lifetime %s, want the token's 2h", life)
	}
	if !slices.Equal(c.CRLDistributionPoints, []string{crlURL}) || !slices.Equal(c.OCSPServer, []string{ocspURL}) {
		t.Errorf("CRL %q, OCSP %q, want the Authority's", c.CRLDistributionPoints, c.OCSPServer)
	}
	if _, err := pki.VerifyChain(chain(t, is), is.Roots, e.now, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("chain does not verify: %v", err)
	}
	rec, err := e.db.GetCertificate(ctx, pki.FormatSerial(c.SerialNumber))
	if err != nil {
		t.Fatalf("not stored: %v", err)
	}
	// The answer and the record state what the certificate says.
	if is.Serial != rec.Serial || !is.NotBefore.Equal(c.NotBefore) || !is.NotAfter.Equal(c.NotAfter) || !rec.NotBefore.Equal(c.NotBefore) || !rec.NotAfter.Equal(c.NotAfter) {
		t.Errorf("answered %s valid %s to %s, stored %s to %s; the certificate says %s to %s", is.Serial, is.NotBefore, is.NotAfter, rec.NotBefore, rec.NotAfter, c.NotBefore, c.NotAfter)
	}
	if n, err := e.db.LogSize(ctx); err != nil || n != is.LogIndex+1 || !strings.HasPrefix(rec.RequestedBy, "token:") {
		t.Errorf("log size %d (%v), index %d, requested by %q", n, err, is.LogIndex, rec.RequestedBy)
	}
	// Another key with the same token is refused.
	_, other := csr(t, x509.CertificateRequest{})
	_, err = e.a.Enroll(ctx, tok, other, 0)
	wantCode(t, err, ca.KindUnauthenticated, api.CodeTokenUsed)
	// The same request again (its answer lost) gets the same certificate.
	again, err := e.a.Enroll(ctx, tok, req, 0)
	if err != nil || !bytes.Equal(again.DER, is.DER) || again.Serial != is.Serial || !again.NotAfter.Equal(is.NotAfter) {
		t.Errorf("replay = %v, %v; want the same certificate", again, err)
	}
}

func TestEnrollRefused(t *testing.T) {
	wrongCA, err := token.New(nil, []string{"https://ca.example.org:8443"}, [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// prepare returns the token and CSR to enroll with, and the lifetime asked.
		prepare func(t *testing.T, e *env) (string, []byte, time.Duration)
		kind    ca.Kind
		code    string
	}{
		{"malformed token", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{})
			return "not a token", req, 0
		}, ca.KindUnauthenticated, api.CodeTokenMalformed},
		{"token of another CA", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{})
			return wrongCA.String(), req, 0
		}, ca.KindUnauthenticated, api.CodeTokenWrongCA},
		{"token unknown here", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			tok, err := token.New(nil, e.a.URLs, e.a.RootFingerprint())
			if err != nil {
				t.Fatal(err)
			}
			_, req := csr(t, x509.CertificateRequest{})
			return tok.String(), req, 0
		}, ca.KindUnauthenticated, api.CodeTokenUnknown},
		{"expired token", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			tok := e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web", TTL: time.Minute})
			e.now = e.now.Add(time.Minute)
			_, req := csr(t, x509.CertificateRequest{})
			return tok, req, 0
		}, ca.KindUnauthenticated, api.CodeTokenExpired},
		{"unreadable CSR", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			return e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web"}), []byte("not a CSR"), 0
		}, ca.KindInvalid, api.CodeBadCSR},
		{"name not granted", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{DNSNames: []string{"bank.example.org"}})
			return e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web", DNSNames: []string{"web.example.org"}}), req, 0
		}, ca.KindInvalid, api.CodeNameNotGranted},
		{"another identity asked for", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{URIs: []*url.URL{spiffeid.RequireFromString("spiffe://example.org/admin/eve").URL()}})
			return e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web"}), req, 0
		}, ca.KindInvalid, api.CodeIdentityMismatch},
		{"lifetime above the token's", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{})
			return e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web", CertTTL: time.Hour}), req, 2 * time.Hour
		}, ca.KindInvalid, api.CodeLifetime},
		{"lifetime above the policy's", func(t *testing.T, e *env) (string, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{})
			return e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web"}), req, 25 * time.Hour
		}, ca.KindInvalid, api.CodeLifetime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tok, req, ttl := tt.prepare(t, e)
			_, err := e.a.Enroll(context.Background(), tok, req, ttl)
			wantCode(t, err, tt.kind, tt.code)
			if n, _ := e.db.LogSize(context.Background()); n != 0 {
				t.Errorf("a refused enrollment left %d log entries", n)
			}
		})
	}
}

// TestRenew: a renewal keeps the identity, names and roles, with a new key,
// and records where it came from.
func TestRenew(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := e.token(t, ca.TokenRequest{ID: "spiffe://example.org/web", DNSNames: []string{"web.example.org"}, Roles: []string{"reader"}, CertTTL: 30 * time.Minute})
	_, req := csr(t, x509.CertificateRequest{})
	first, err := e.a.Enroll(ctx, tok, req, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.now = e.now.Add(15 * time.Minute)
	_, req = csr(t, x509.CertificateRequest{DNSNames: []string{"web.example.org"}})
	next, err := e.a.Renew(ctx, leaf(t, first), req, 0)
	if err != nil {
		t.Fatal(err)
	}
	if next.ID != first.ID || !slices.Equal(leaf(t, next).DNSNames, leaf(t, first).DNSNames) || !slices.Equal(identity.Roles(leaf(t, next)), []string{"reader"}) {
		t.Errorf("renewed %s %q %q, want %s %q [reader]", next.ID, leaf(t, next).DNSNames, identity.Roles(leaf(t, next)), first.ID, leaf(t, first).DNSNames)
	}
	if life := leaf(t, next).NotAfter.Sub(e.now); life != 30*time.Minute {
		t.Errorf("renewed for %s, want the 30m the renewed certificate had", life)
	}
	rec, err := e.db.GetCertificate(ctx, next.Serial)
	if err != nil || rec.RenewedFrom != first.Serial {
		t.Errorf("renewed_from %q (%v), want %s", rec.RenewedFrom, err, first.Serial)
	}
}

func TestRenewRefused(t *testing.T) {
	tests := []struct {
		name string
		// prepare returns the certificate presented, the CSR and the lifetime asked.
		prepare func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration)
		kind    ca.Kind
		code    string
	}{
		{"revoked", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			is := e.enroll(t, "spiffe://example.org/web")
			if _, err := e.a.Revoke(context.Background(), e.admin, ca.RevokeRequest{Serial: is.Serial}); err != nil {
				t.Fatal(err)
			}
			_, req := csr(t, x509.CertificateRequest{})
			return leaf(t, is), req, 0
		}, ca.KindForbidden, api.CodeCertRevoked},
		{"identity revoked", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			is := e.enroll(t, "spiffe://example.org/web")
			if _, err := e.a.Revoke(context.Background(), e.admin, ca.RevokeRequest{ID: "spiffe://example.org/web"}); err != nil {
				t.Fatal(err)
			}
			_, req := csr(t, x509.CertificateRequest{})
			return leaf(t, is), req, 0
		}, ca.KindForbidden, api.CodeCertRevoked},
		{"expired", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			is := e.enroll(t, "spiffe://example.org/web")
			e.now = leaf(t, is).NotAfter.Add(time.Second)
			_, req := csr(t, x509.CertificateRequest{})
			return leaf(t, is), req, 0
		}, ca.KindForbidden, api.CodeCertExpired},
		{"not issued here", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			_, req := csr(t, x509.CertificateRequest{})
			return e.ca.Leaf(t, "spiffe://example.org/web").Leaf(), req, 0
		}, ca.KindForbidden, api.CodeCertUnknown},
		{"longer than the certificate renewed", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			is := e.enroll(t, "spiffe://example.org/web")
			_, req := csr(t, x509.CertificateRequest{})
			return leaf(t, is), req, 2 * time.Hour
		}, ca.KindInvalid, api.CodeLifetime},
		{"a name it did not have", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			is := e.enroll(t, "spiffe://example.org/web")
			_, req := csr(t, x509.CertificateRequest{DNSNames: []string{"bank.example.org"}})
			return leaf(t, is), req, 0
		}, ca.KindInvalid, api.CodeNameNotGranted},
		{"entry withdrawn", func(t *testing.T, e *env) (*x509.Certificate, []byte, time.Duration) {
			ctx := context.Background()
			node := e.enroll(t, "spiffe://example.org/node/n1")
			en, err := e.a.CreateEntry(ctx, e.admin, ca.EntryRequest{ID: "spiffe://example.org/web", Nodes: []string{"spiffe://example.org/node/n1"}, Selectors: []string{"unix:uid:1001"}})
			if err != nil {
				t.Fatal(err)
			}
			_, req := csr(t, x509.CertificateRequest{})
			is, err := e.a.IssueForNode(ctx, leaf(t, node), en.ID, req)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.a.DeleteEntry(ctx, e.admin, en.ID); err != nil {
				t.Fatal(err)
			}
			return leaf(t, is), req, 0
		}, ca.KindForbidden, api.CodeEntryNotGranted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			peer, req, ttl := tt.prepare(t, e)
			before, _ := e.db.LogSize(context.Background())
			_, err := e.a.Renew(context.Background(), peer, req, ttl)
			wantCode(t, err, tt.kind, tt.code)
			if after, _ := e.db.LogSize(context.Background()); after != before {
				t.Errorf("a refused renewal logged %d entries", after-before)
			}
		})
	}
}

// TestRevoke: what is revoked is reported once to OnRevoke, and again is
// harmless.
func TestRevoke(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	is := e.enroll(t, "spiffe://example.org/web")
	serial := is.Serial
	// As openssl prints it: upper case, colons.
	var typed []string
	for i := 0; i < len(serial); i += 2 {
		typed = append(typed, strings.ToUpper(serial[i:min(i+2, len(serial))]))
	}
	revs, err := e.a.Revoke(ctx, e.admin, ca.RevokeRequest{Serial: strings.Join(typed, ":"), Reason: 1})
	if err != nil || len(revs) != 1 || revs[0].Serial != serial || revs[0].AlreadyRevoked {
		t.Fatalf("Revoke = %+v, %v; want %s newly revoked", revs, err, serial)
	}
	revs, err = e.a.Revoke(ctx, e.admin, ca.RevokeRequest{Serial: serial})
	if err != nil || len(revs) != 1 || !revs[0].AlreadyRevoked {
		t.Errorf("second Revoke = %+v, %v; want already revoked", revs, err)
	}
	if !slices.Equal(e.revoked, []string{serial}) {
		t.Errorf("OnRevoke heard %q, want [%s] once", e.revoked, serial)
	}
}

func TestRevokeRefused(t *testing.T) {
	tests := []struct {
		name string
		r    ca.RevokeRequest
		kind ca.Kind
		code string
	}{
		{"nothing named", ca.RevokeRequest{}, ca.KindInvalid, api.CodeBadRequest},
		{"two named", ca.RevokeRequest{Serial: "01", ID: "spiffe://example.org/web"}, ca.KindInvalid, api.CodeBadRequest},
		{"not a serial", ca.RevokeRequest{Serial: "xyz"}, ca.KindInvalid, api.CodeBadSerial},
		{"zero serial", ca.RevokeRequest{Serial: "00"}, ca.KindInvalid, api.CodeBadSerial},
		{"serial too long", ca.RevokeRequest{Serial: strings.Repeat("0", 64) + "1"}, ca.KindInvalid, api.CodeBadSerial},
		{"serial not issued here", ca.RevokeRequest{Serial: "3a0f"}, ca.KindNotFound, api.CodeNotFound},
		{"not a SPIFFE ID", ca.RevokeRequest{ID: "web"}, ca.KindInvalid, api.CodeBadIdentity},
		{"identity without certificates", ca.RevokeRequest{ID: "spiffe://example.org/nobody"}, ca.KindNotFound, api.CodeNotFound},
		{"a workload as node", ca.RevokeRequest{Node: "spiffe://example.org/web"}, ca.KindInvalid, api.CodeBadNode},
		{"a path with node inside", ca.RevokeRequest{Node: "spiffe://example.org/ns/node/n1"}, ca.KindInvalid, api.CodeBadNode},
		{"node without certificates", ca.RevokeRequest{Node: "spiffe://example.org/node/n9"}, ca.KindNotFound, api.CodeNotFound},
	}
	e := newEnv(t)
	e.enroll(t, "spiffe://example.org/web")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.a.Revoke(context.Background(), e.admin, tt.r)
			wantCode(t, err, tt.kind, tt.code)
		})
	}
	if len(e.revoked) != 0 {
		t.Errorf("refused revocations revoked %q", e.revoked)
	}
}

// TestCreateTokenRefused: the policy's rules reach the caller as
// invalid-request errors with the rule's code, and no token is stored.
func TestCreateTokenRefused(t *testing.T) {
	tests := []struct {
		name string
		r    ca.TokenRequest
		code string
	}{
		{"not a SPIFFE ID", ca.TokenRequest{ID: "web"}, api.CodeBadIdentity},
		{"another trust domain", ca.TokenRequest{ID: "spiffe://other.org/web"}, api.CodeForeignTrustDomain},
		{"an operator", ca.TokenRequest{ID: "spiffe://example.org/admin/eve"}, api.CodeReservedIdentity},
		{"the CA itself", ca.TokenRequest{ID: "spiffe://example.org/mutual/server"}, api.CodeReservedIdentity},
		{"an IP address as DNS name", ca.TokenRequest{ID: "spiffe://example.org/web", DNSNames: []string{"10.0.0.1"}}, api.CodeBadName},
		{"not an IP address", ca.TokenRequest{ID: "spiffe://example.org/web", IPAddresses: []string{"web"}}, api.CodeBadName},
		{"a role of two words", ca.TokenRequest{ID: "spiffe://example.org/web", Roles: []string{"db admin"}}, api.CodeBadRole},
		{"token lifetime above the policy's", ca.TokenRequest{ID: "spiffe://example.org/web", TTL: 8 * 24 * time.Hour}, api.CodeLifetime},
		{"certificate lifetime above the policy's", ca.TokenRequest{ID: "spiffe://example.org/web", CertTTL: 25 * time.Hour}, api.CodeLifetime},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := e.a.CreateToken(context.Background(), e.admin, tt.r)
			wantCode(t, err, ca.KindInvalid, tt.code)
		})
	}
	if ts, err := e.a.ListTokens(context.Background()); err != nil || len(ts) != 0 {
		t.Errorf("refused requests stored %d tokens (%v)", len(ts), err)
	}
}

// TestCreateToken: a token lives policy.DefaultTokenTTL unless told.
func TestCreateToken(t *testing.T) {
	e := newEnv(t)
	_, rec, err := e.a.CreateToken(context.Background(), e.admin, ca.TokenRequest{ID: "spiffe://example.org/node/n1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.ExpiresAt.Sub(e.now); got != 15*time.Minute {
		t.Errorf("token lives %s, want 15m", got)
	}
	if rec.CreatedBy != e.admin.String() {
		t.Errorf("created by %q, want %s", rec.CreatedBy, e.admin)
	}
}

func TestCreateEntryRefused(t *testing.T) {
	node := []string{"spiffe://example.org/node/n1"}
	tests := []struct {
		name string
		r    ca.EntryRequest
		code string
	}{
		{"an operator", ca.EntryRequest{ID: "spiffe://example.org/admin/eve", Nodes: node}, api.CodeReservedIdentity},
		{"a node", ca.EntryRequest{ID: "spiffe://example.org/node/n2", Nodes: node}, api.CodeReservedIdentity},
		{"no node", ca.EntryRequest{ID: "spiffe://example.org/web"}, api.CodeBadNode},
		{"a workload as node", ca.EntryRequest{ID: "spiffe://example.org/web", Nodes: []string{"spiffe://example.org/db"}}, api.CodeBadNode},
		{"bad selector", ca.EntryRequest{ID: "spiffe://example.org/web", Nodes: node, Selectors: []string{"nonsense"}}, api.CodeBadSelector},
		{"bad DNS name", ca.EntryRequest{ID: "spiffe://example.org/web", Nodes: node, DNSNames: []string{"a b"}}, api.CodeBadName},
		{"bad role", ca.EntryRequest{ID: "spiffe://example.org/web", Nodes: node, Roles: []string{""}}, api.CodeBadRole},
		{"lifetime above the policy's", ca.EntryRequest{ID: "spiffe://example.org/web", Nodes: node, CertTTL: 25 * time.Hour}, api.CodeLifetime},
	}
	e := newEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.a.CreateEntry(context.Background(), e.admin, tt.r)
			wantCode(t, err, ca.KindInvalid, tt.code)
		})
	}
	if es, err := e.a.ListEntries(context.Background()); err != nil || len(es) != 0 {
		t.Errorf("refused requests stored %d entries (%v)", len(es), err)
	}
}

// TestIssueForNode: a node obtains only the identities an entry grants it;
// the certificate is tied to the node, so revoking the node revokes it.
func TestIssueForNode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	n1 := e.enroll(t, "spiffe://example.org/node/n1")
	n2 := e.enroll(t, "spiffe://example.org/node/n2")
	web := e.enroll(t, "spiffe://example.org/web")
	en, err := e.a.CreateEntry(ctx, e.admin, ca.EntryRequest{ID: "spiffe://example.org/ns/prod/db", Nodes: []string{"spiffe://example.org/node/n1"}, Selectors: []string{"unix:uid:1001"}})
	if err != nil {
		t.Fatal(err)
	}
	_, req := csr(t, x509.CertificateRequest{})
	_, err = e.a.IssueForNode(ctx, leaf(t, n2), en.ID, req)
	wantCode(t, err, ca.KindForbidden, api.CodeEntryNotGranted)
	_, err = e.a.IssueForNode(ctx, leaf(t, n1), "no-such-entry", req)
	wantCode(t, err, ca.KindForbidden, api.CodeEntryNotGranted)
	_, err = e.a.IssueForNode(ctx, leaf(t, web), en.ID, req)
	wantCode(t, err, ca.KindForbidden, api.CodeNodeRequired)
	is, err := e.a.IssueForNode(ctx, leaf(t, n1), en.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	if is.ID.String() != "spiffe://example.org/ns/prod/db" {
		t.Errorf("issued %s, want the entry's identity", is.ID)
	}
	revs, err := e.a.Revoke(ctx, e.admin, ca.RevokeRequest{Node: "spiffe://example.org/node/n1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(revs, func(r store.Revocation) bool { return r.Serial == is.Serial }) {
		t.Errorf("revoking the node revoked %+v, not the workload certificate obtained through it", revs)
	}
}
