package translog_test

// Crash consistency: the real `mutual server` is killed with SIGKILL while
// clients enroll and renew; after a restart every certificate any client
// received is in the log and the tree verifies. And a log that cannot be
// appended to makes issuance fail cleanly: no certificate leaves unlogged.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// freeAddr is a loopback address reserved for t that a child binds later
// (see testport).
func freeAddr(t testing.TB) string {
	t.Helper()
	return testport.Addr(t)
}

// serverProc is a running `mutual server`.
type serverProc struct {
	cmd    *exec.Cmd
	stderr *testlog.Buffer
	done   chan struct{}
}

// startServerProc runs the binary's server for dir and waits until it
// answers /healthz over TLS verified against the CA's root.
func startServerProc(t *testing.T, c *testca.CA, passFile, listen, httpListen string) *serverProc {
	t.Helper()
	cmd := exec.Command(mutualBinary(t), "server", "--dir", c.Dir, "--passphrase-file", passFile, "--listen", listen, "--http-listen", httpListen)
	cmd.Env = cmdEnv()
	p := &serverProc{cmd: cmd, stderr: &testlog.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	testwait.Eventually(t, func() bool {
		select {
		case <-p.done:
			t.Fatalf("mutual server exited before it served:\n%s", p.stderr)
		default:
		}
		resp, err := hc.Get("https://" + listen + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "mutual server healthy at "+listen)
	return p
}

func (p *serverProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(safetyNet):
		t.Fatal("mutual server survived SIGKILL")
	}
}

func (p *serverProc) interrupt(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(safetyNet):
		t.Fatalf("mutual server still running %s after SIGINT:\n%s", safetyNet, p.stderr)
	}
}

// received collects every certificate the clients were given.
type received struct {
	mu    sync.Mutex
	certs []*x509.Certificate
	n     atomic.Int64
}

func (r *received) add(c *x509.Certificate) {
	r.mu.Lock()
	r.certs = append(r.certs, c)
	r.mu.Unlock()
	r.n.Add(1)
}

func (r *received) all() []*x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*x509.Certificate(nil), r.certs...)
}

// TestCrashConsistency kills the CA service (SIGKILL, a real process) while
// four clients enroll and renew, restarts it on the same directory and port,
// lets the clients go on, and checks that every certificate any client
// received is proven in the log, that the tree after the restart extends the
// checkpoints seen before the crash, and that the store holds no certificate
// without its entry.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real server under load")
	}
	c := testca.New(t)
	passFile := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(passFile, []byte(testca.Passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, httpListen := freeAddr(t), freeAddr(t)
	srv := startServerProc(t, c, passFile, listen, httpListen)
	url := "https://" + listen
	pub, err := os.ReadFile(filepath.Join(c.Dir, logkey.VerifierFile))
	if err != nil {
		t.Fatal(err)
	}
	cl := &translog.Client{Base: "http://" + httpListen, VerifierKey: strings.TrimSpace(string(pub))}

	adminID, err := identity.Load(c.AdminDir)
	if err != nil {
		t.Fatal(err)
	}
	tc := adminID.TLSCertificate()
	admin, err := client.New([]string{url}, adminID.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.CloseIdleConnections()

	var got received
	var stop atomic.Bool
	var wg sync.WaitGroup
	var transient atomic.Int64
	unexpected := make(chan error, 100)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			id := fmt.Sprintf("spiffe://example.org/ns/crash/w%d", w)
			var cur *identity.Identity
			for i := 0; !stop.Load(); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var next *identity.Identity
				var err error
				if cur == nil || i%16 == 0 {
					var tok *api.TokenResponse
					if tok, err = admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: id}); err == nil {
						var enr *client.Enrollment
						if enr, err = client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0); err == nil {
							next = enr.Identity
						}
					}
				} else {
					next, err = client.RenewIdentity(ctx, cur, []string{url}, "", 0)
				}
				cancel()
				if err != nil {
					// While the server is down: connection refused or
					// reset. Anything the CA answers otherwise (a
					// renewal refused because the certificate it
					// issued was forgotten) is a failure.
					var ae *client.APIError
					if errors.As(err, &ae) && !ae.Unavailable() {
						select {
						case unexpected <- fmt.Errorf("worker %d: %w", w, err):
						default:
						}
					}
					transient.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				got.add(next.Leaf())
				cur = next
			}
		}(w)
	}
	defer func() { stop.Store(true); wg.Wait() }()

	// A verifier and the real `mutual log verify` see the log early on.
	testwait.Eventually(t, func() bool { return got.n.Load() >= 60 }, "60 certificates issued")
	early := waitCheckpoint(t, cl, 50)
	st := filepath.Join(t.TempDir(), "state.json")
	verify := []string{"log", "verify", "--server", cl.Base, "--key-file", filepath.Join(c.Dir, logkey.VerifierFile), "--state", st}
	mustMutual(t, verify...)

	testwait.Eventually(t, func() bool { return got.n.Load() >= 300 }, "300 certificates issued")
	preKill, err := cl.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	failedBefore := transient.Load()
	srv.kill(t)
	atKill := got.n.Load()
	t.Logf("SIGKILL after %d certificates received (early checkpoint %d, last before the kill %d)", atKill, early.Size, preKill.Size)
	testwait.Eventually(t, func() bool { return transient.Load() > failedBefore }, "clients hitting the dead server")

	srv = startServerProc(t, c, passFile, listen, httpListen)
	testwait.Eventually(t, func() bool { return got.n.Load() >= atKill+100 }, "100 more certificates after the restart")
	stop.Store(true)
	wg.Wait()
	close(unexpected)
	for err := range unexpected {
		t.Errorf("the CA refused a client after the restart: %v", err)
	}
	certs := got.all()
	t.Logf("%d certificates received in all, %d attempts failed even after the client's retries", len(certs), transient.Load())

	// Every certificate received is proven in a checkpoint signed after the
	// restart (allowing the signer its interval to cover the last ones).
	ctx := context.Background()
	pending := certs
	var final *translog.Checkpoint
	testwait.EventuallyNil(t, func() error {
		var err error
		if final, err = cl.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		var still []*x509.Certificate
		var lastErr error
		for _, cert := range pending {
			if _, entry, err := cl.ProveCertificate(ctx, final, cert); err != nil {
				still, lastErr = append(still, cert), err
			} else if k := entry.RequestedBy.Kind(); k != translog.RequestedByToken && k != translog.RequestedByRenewal {
				t.Errorf("entry of %x requested by %q", cert.SerialNumber, entry.RequestedBy)
			}
		}
		pending = still
		if len(pending) > 0 {
			return fmt.Errorf("%d of %d certificates received are not in the log of %d entries; last error: %w", len(pending), len(certs), final.Size, lastErr)
		}
		return nil
	}, "every certificate received proven in the log")
	// The tree after the restart extends what was seen before the crash,
	// and every entry in it matches the tree.
	for _, old := range []*translog.Checkpoint{early, preKill} {
		if err := cl.CheckConsistency(ctx, old, final); err != nil {
			t.Errorf("checkpoint of %d entries after the restart vs %d before: %v", final.Size, old.Size, err)
		}
	}
	all, err := cl.Entries(ctx, final, 0, final.Size)
	if err != nil {
		t.Fatalf("entries of the final tree: %v", err)
	}
	seen := map[string]bool{}
	for i, raw := range all {
		e, err := translog.ParseEntry(raw)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		cert, err := e.Cert()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if seen[string(cert.Raw)] {
			t.Errorf("entry %d: certificate %x logged twice", i, cert.SerialNumber)
		}
		seen[string(cert.Raw)] = true
	}
	out := mustMutual(t, append(verify, "--cert", writeCert(t, certs[atKill-1]))...)
	if !strings.Contains(out, "consistent with") || !strings.Contains(out, "included in the checkpoint") {
		t.Errorf("mutual log verify after the restart:\n%s", out)
	}

	// The store: every certificate has its entry, every entry once.
	srv.interrupt(t)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(c.Dir, pki.DatabaseFile)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size, certsN, unlogged, distinct, entriesN int64
	for q, v := range map[string]*int64{
		"SELECT size FROM log_state":                                                     &size,
		"SELECT COUNT(*) FROM certificates":                                              &certsN,
		"SELECT COUNT(*) FROM certificates WHERE log_index IS NULL":                      &unlogged,
		"SELECT COUNT(DISTINCT log_index) FROM certificates WHERE log_index IS NOT NULL": &distinct,
		"SELECT COUNT(*) FROM log_entries":                                               &entriesN,
	} {
		if err := db.QueryRow(q).Scan(v); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if unlogged != 0 || certsN != size || distinct != size || entriesN != size || size < final.Size {
		t.Errorf("store after the crash: %d certificates (%d without a log entry, %d distinct indexes), log of %d (%d entries), final checkpoint %d",
			certsN, unlogged, distinct, size, entriesN, final.Size)
	}
	t.Logf("accounting after SIGKILL under load: %d certificates received by clients, all proved in the log; %d stored, %d logged (%d distinct log indexes, %d entries), %d unlogged, none duplicated",
		len(certs), certsN, size, distinct, entriesN, unlogged)
}

// TestIssuanceFailsWhenLogAppendFails makes the append itself fail (the
// store refuses writes to the log's table): issuance answers 503, returns
// no certificate, stores none and consumes no token; once the log accepts
// writes again the same token enrolls, and the certificate is in the log.
func TestIssuanceFailsWhenLogAppendFails(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	tok := e.token(t, "spiffe://example.org/ns/prod/late", api.TokenRequest{})
	before := e.logSize(t)
	certsBefore, err := e.Store(t).ListCertificates(ctx, store.CertificateFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	e.exec(t, `CREATE TRIGGER log_down BEFORE INSERT ON log_entries BEGIN SELECT RAISE(ABORT, 'the log cannot be appended to'); END`)

	checkUnavailable(t, "enroll", e.enrollOnce(t, tok.Token))
	checkUnavailable(t, "renew", e.renewOnce(t, e.peer))
	if _, err := e.Authority(t).Renew(ctx, e.peer.Leaf(), newCSR(t), 0); err == nil {
		t.Error("in-process renewal succeeded although the log cannot be appended to")
	}
	if n := e.logSize(t); n != before {
		t.Errorf("log grew from %d to %d", before, n)
	}
	certsAfter, err := e.Store(t).ListCertificates(ctx, store.CertificateFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if len(certsAfter) != len(certsBefore) {
		t.Errorf("%d certificates stored while the log was down", len(certsAfter)-len(certsBefore))
	}
	rec, err := e.Store(t).GetToken(ctx, tok.ID)
	if err != nil || !rec.UsedAt.IsZero() {
		t.Errorf("the token was consumed by a failed issuance: %+v %v", rec, err)
	}

	e.exec(t, "DROP TRIGGER log_down")
	enr, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatalf("the same token after the log recovered: %v", err)
	}
	cp := e.settle(t)
	if _, _, err := e.logClient().ProveCertificate(ctx, cp, enr.Identity.Leaf()); err != nil {
		t.Fatal(err)
	}
}

// TestIssuanceFailsWhenPostgresDown: with the PostgreSQL store stopped,
// enrollment and renewal answer 503 and no certificate; when it is back,
// issuance resumes and the log stays one consistent tree.
func TestIssuanceFailsWhenPostgresDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx := context.Background()
	pg := pgtest.Start(t)
	e := startCA(t, pg.NewDatabase(t))
	e.issueMany(t, 5)
	before := e.settle(t)
	tok := e.token(t, "spiffe://example.org/ns/prod/pg", api.TokenRequest{})

	pg.Stop(t)
	checkUnavailable(t, "enroll with PostgreSQL down", e.enrollOnce(t, tok.Token))
	checkUnavailable(t, "renew with PostgreSQL down", e.renewOnce(t, e.peer))

	pg.Start(t)
	enr, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatalf("enrollment once PostgreSQL is back: %v", err)
	}
	after := e.settle(t)
	cl := e.logClient()
	if err := cl.CheckConsistency(ctx, before, after); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.ProveCertificate(ctx, after, enr.Identity.Leaf()); err != nil {
		t.Fatal(err)
	}
	certs, err := e.Store(t).ListCertificates(ctx, store.CertificateFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(certs)) != e.logSize(t) {
		t.Errorf("%d certificates, %d log entries", len(certs), e.logSize(t))
	}
}

// enrollOnce and renewOnce make one attempt, without the client's retries,
// and return only the error: the caller expects no certificate.
func (e *caEnv) enrollOnce(t *testing.T, tok string) error {
	t.Helper()
	cl, err := client.New([]string{e.URL}, []*x509.Certificate{e.Root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseIdleConnections()
	cl.Retries = -1
	resp, err := cl.Enroll(context.Background(), api.EnrollRequest{Token: tok, CSR: string(newCSR(t))})
	if err == nil || resp.ChainPEM != "" {
		t.Errorf("a certificate was returned: %s", resp.ChainPEM)
	}
	return err
}

func (e *caEnv) renewOnce(t *testing.T, id *identity.Identity) error {
	t.Helper()
	tc := id.TLSCertificate()
	cl, err := client.New([]string{e.URL}, id.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseIdleConnections()
	cl.Retries = -1
	resp, err := cl.Renew(context.Background(), api.RenewRequest{CSR: string(newCSR(t))})
	if err == nil || resp.ChainPEM != "" {
		t.Errorf("a certificate was returned: %s", resp.ChainPEM)
	}
	return err
}

func checkUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable {
		t.Errorf("%s: %v, want HTTP 503 and no certificate", what, err)
	}
}
