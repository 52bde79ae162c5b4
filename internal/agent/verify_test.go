package agent_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// forgingCA answers the node API as the CA would (with the CA's own
// serving identity) but signs workload certificates as mode says.
type forgingCA struct {
	t     *testing.T
	real  *testca.CA
	other *testca.CA
	entry api.Entry

	mu    sync.Mutex
	mode  string // "other-ca", "other-id", "honest"
	calls map[string]int
}

func (f *forgingCA) setMode(m string) {
	f.mu.Lock()
	f.mode = m
	f.mu.Unlock()
}

func (f *forgingCA) count(m string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

func (f *forgingCA) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/node/entries":
		json.NewEncoder(w).Encode(api.EntryList{Entries: []api.Entry{f.entry}})
	case "/v1/node/svid":
		var req api.NodeSVIDRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		csr, err := pki.ParseCSR([]byte(req.CSR))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f.mu.Lock()
		mode := f.mode
		f.calls[mode]++
		f.mu.Unlock()
		issuer, id := f.real, f.entry.SPIFFEID
		switch mode {
		case "other-ca":
			issuer = f.other
		case "other-id":
			id = td + "/admin/operator"
		}
		cert, err := issuer.Issuer.Issue(pki.Leaf{ID: spiffeid.RequireFromString(id), PublicKey: csr.PublicKey, TTL: time.Hour, Now: time.Now()})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		json.NewEncoder(w).Encode(api.IssueResponse{
			SPIFFEID: f.entry.SPIFFEID, // the answer claims what was asked
			Serial:   pki.FormatSerial(cert.SerialNumber),
			ChainPEM: string(pki.EncodeCertificates(cert, issuer.Intermediate)),
			RootsPEM: string(pki.EncodeCertificates(issuer.Root)),
			NotAfter: cert.NotAfter,
		})
	default:
		http.Error(w, `{"code":"unavailable","message":"down"}`, http.StatusServiceUnavailable)
	}
}

// TestAgentRefusesForgedSVIDAnswer: the agent keeps and serves a workload
// certificate only if its chain verifies to the node's trust bundle and it
// carries the SPIFFE ID the entry grants, whatever the JSON answer says
// (issue 12, item 15). A responder holding the CA's serving identity
// answers first with a certificate from another CA, then with one from
// the right CA for spiffe://TD/admin/operator; neither is kept or served.
// Then it answers honestly, and the workload gets its identity.
func TestAgentRefusesForgedSVIDAnswer(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	state, sock := enrolled(t, e, "n1")
	serverID, err := identity.Load(e.ServerDir)
	if err != nil {
		t.Fatal(err)
	}
	f := &forgingCA{t: t, real: e.CA, other: testca.New(t), mode: "other-ca", calls: map[string]int{},
		entry: api.Entry{ID: "forged-entry", SPIFFEID: td + "/ns/prod/web", Nodes: []string{td + "/node/n1"}, Selectors: []string{fmt.Sprintf("unix:uid:%d", os.Getuid())}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f, TLSConfig: &tls.Config{Certificates: []tls.Certificate{serverID.TLSCertificate()}, ClientAuth: tls.RequireAnyClientCert}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	// The node now talks to the forging responder.
	if err := client.SaveCAURLs(filepath.Join(state, "node"), []string{"https://" + ln.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	logger, agentLog := testlog.New(t, "agent")
	ra := runAgent(t, agent.Config{StateDir: state, Socket: sock, Log: logger})

	svidDir := filepath.Join(state, "svids", f.entry.ID)
	for _, mode := range []string{"other-ca", "other-id"} {
		f.setMode(mode)
		before := f.count(mode)
		testwait.EventuallyNil(t, func() error {
			if _, err := os.Stat(svidDir); err == nil {
				t.Fatalf("%s: the agent kept the forged certificate in %s", mode, svidDir)
			}
			if n := f.count(mode); n < before+2 {
				return fmt.Errorf("%d answers", n-before)
			}
			return nil
		}, "two forged answers ("+mode+")")
		if _, err := os.Stat(svidDir); err == nil {
			t.Fatalf("%s: the agent kept the forged certificate in %s", mode, svidDir)
		}
	}
	log := agentLog.String()
	for _, want := range []string{"does not verify against the node's trust bundle", "but entry forged-entry grants " + td + "/ns/prod/web"} {
		if !strings.Contains(log, want) {
			t.Errorf("the agent's log does not say %q", want)
		}
	}
	// Honest answers are taken: the test can tell the difference.
	f.setMode("honest")
	src := source(t, ra.sock, f.entry.SPIFFEID)
	s, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.VerifyChain(s.Certificates, serverID.Roots, time.Time{}, x509.ExtKeyUsageAny); err != nil {
		t.Fatalf("the served SVID does not verify: %v", err)
	}
}

// TestAgentHandsOutRevocationSources: what the agent hands a proxy lets it
// find a revocation source (issue 12, item 6): the SVIDs it serves carry
// the CA's CRL distribution point and OCSP address, and every identity
// directory it writes holds mutual.json with the CA's address.
func TestAgentHandsOutRevocationSources(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	id := td + "/ns/prod/proxy"
	entry(t, e, id, td+"/node/n1", 0, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	dir := filepath.Join(shortDir(t), "tls")
	ws, err := agent.ParseWriteSpec(id + "=" + dir)
	if err != nil {
		t.Fatal(err)
	}
	ra := nodeAgent(t, e, "n1", func(c *agent.Config) { c.Writes = []agent.WriteSpec{ws} })
	s, err := source(t, ra.sock, id).GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	leaf := s.Certificates[0]
	if len(leaf.CRLDistributionPoints) == 0 || len(leaf.OCSPServer) == 0 {
		t.Errorf("the served SVID carries CRL %v and OCSP %v: a proxy fed by the agent cannot check revocation", leaf.CRLDistributionPoints, leaf.OCSPServer)
	}
	testwait.EventuallyNil(t, func() error {
		urls, err := client.LoadCAURLs(dir)
		if err != nil {
			return err
		}
		if len(urls) != 1 || urls[0] != e.URL {
			return fmt.Errorf("mutual.json holds %v, want [%s]", urls, e.URL)
		}
		return nil
	}, "mutual.json in the written directory")
}
