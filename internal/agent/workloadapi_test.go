package agent_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestGoSpiffeMTLSAcrossRotation: unmodified go-spiffe v2 clients get their
// SVIDs and the bundle from the agent's socket, two parties complete mTLS
// with spiffetls/tlsconfig authorizing each other's IDs, and the SVIDs
// rotate while they keep talking, without a failed call.
func TestGoSpiffeMTLSAcrossRotation(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	serverID := td + "/ns/test/server"
	clientID := td + "/ns/test/client"
	// One process is both parties: two entries that both match it, one by
	// uid and one by the test binary's path; each source picks its own SVID.
	entry(t, e, serverID, td+"/node/n1", 20*time.Second, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	entry(t, e, clientID, td+"/node/n1", 20*time.Second, nil, "unix:path:"+exe)
	ra := nodeAgent(t, e, "n1", nil)

	srvSrc := source(t, ra.sock, serverID)
	cliSrc := source(t, ra.sock, clientID)

	// The SVID and the bundle, as go-spiffe sees them.
	tdID := spiffeid.RequireTrustDomainFromString("example.org")
	for _, src := range []*workloadapi.X509Source{srvSrc, cliSrc} {
		svid, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		b, err := src.GetX509BundleForTrustDomain(tdID)
		if err != nil {
			t.Fatalf("no bundle for %s: %v", tdID, err)
		}
		if !b.HasX509Authority(e.Root) || len(b.X509Authorities()) != 1 {
			t.Fatalf("bundle: want exactly the CA's root, got %d authorities", len(b.X509Authorities()))
		}
		if _, _, err := x509svid.Verify(svid.Certificates, src); err != nil {
			t.Fatalf("SVID %s does not verify against the served bundle: %v", svid.ID, err)
		}
		leaf := svid.Certificates[0]
		if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 20*time.Second+pki.ClockSkew {
			t.Errorf("%s: lifetime %s, want the entry's 20s (+%s back-dating)", svid.ID, got, pki.ClockSkew)
		}
		if svid.PrivateKey == nil {
			t.Fatalf("%s: no private key", svid.ID)
		}
	}

	// The server authorizes only the client's ID; the client only the server's.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(srvSrc, srvSrc, tlsconfig.AuthorizeID(spiffeid.RequireFromString(clientID))),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer := r.TLS.PeerCertificates[0]
			fmt.Fprintf(w, "%s %s", peer.URIs[0], serialOf(peer))
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // the refused client below is expected
	}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	url := "https://" + ln.Addr().String() + "/"

	newClient := func(authorize string) *http.Client {
		tr := &http.Transport{
			TLSClientConfig:   tlsconfig.MTLSClientConfig(cliSrc, cliSrc, tlsconfig.AuthorizeID(spiffeid.RequireFromString(authorize))),
			DisableKeepAlives: true, // a handshake per call: every call sees the current SVIDs
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	hc := newClient(serverID)

	// A client that expects another server ID refuses this one.
	if _, err := newClient(td + "/ns/test/other").Get(url); err == nil || !strings.Contains(err.Error(), "unexpected ID") {
		t.Fatalf("a client authorizing another ID must refuse the server: %v", err)
	}

	call := func() (serverSerial, clientSerial string) {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("mTLS call failed: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("mTLS call: HTTP %d %s", resp.StatusCode, body)
		}
		id, serial, _ := strings.Cut(string(body), " ")
		if id != clientID {
			t.Fatalf("the server saw %s, want %s", id, clientID)
		}
		srv := resp.TLS.PeerCertificates[0]
		if srv.URIs[0].String() != serverID {
			t.Fatalf("the client saw %s, want %s", srv.URIs[0], serverID)
		}
		return serialOf(srv), serial
	}

	s0, c0 := call()
	calls := 1
	testwait.Eventually(t, func() bool {
		s, c := call()
		calls++
		if s == s0 || c == c0 {
			return false
		}
		t.Logf("both SVIDs rotated after %d calls: server %s → %s, client %s → %s", calls, s0, s, c0, c)
		return true
	}, "both peers to see the other's rotated SVID (20s certificates)")
	// They keep talking after the rotation.
	for i := 0; i < 5; i++ {
		call()
	}
}

// TestRenewalAtHalfLife: a workload certificate is renewed at about half
// its lifetime (with a little jitter), not earlier: two consecutive SVIDs of
// a 20s entry are issued at least a quarter of the lifetime apart.
func TestRenewalAtHalfLife(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	id := td + "/ns/test/halflife"
	const ttl = 20 * time.Second
	entry(t, e, id, td+"/node/n1", ttl, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	ra := nodeAgent(t, e, "n1", nil)
	src := source(t, ra.sock, id)
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var next *x509.Certificate
	for next == nil {
		if err := src.WaitUntilUpdated(ctx); err != nil {
			t.Fatalf("no rotation within 45s: %v", err)
		}
		s, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if s.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
			next = s.Certificates[0]
		}
	}
	gap := next.NotBefore.Sub(first.Certificates[0].NotBefore)
	if gap < ttl/4 {
		t.Errorf("a %s certificate was replaced %s after the previous one was issued: renewal at half life means about %s "+
			"(renewal time counted from NotBefore, which is back-dated by %s: any lifetime up to %[4]s is renewed at every tick)",
			ttl, gap.Round(time.Millisecond), ttl/2, pki.ClockSkew)
	}
}
