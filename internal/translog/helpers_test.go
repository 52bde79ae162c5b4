package translog_test

// Shared set-up for the issuance log's tests: a real CA service on loopback
// (testenv: embedded SQLite store, the plain-HTTP listener that serves
// /log/), ways to issue many certificates quickly, direct access to
// the store's file for tampering, and the real mutual binary.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver, to open the store's file directly

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// safetyNet bounds every wait so that a hang fails the test instead of the
// run. It is not a performance assertion.
const safetyNet = 60 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// caEnv is a running CA service (testenv, with its plain-HTTP listener,
// where the log is served as it would be to an auditor) and what the tests
// need of it.
type caEnv struct {
	*testenv.CA
	// verifierKey is CA_DIR/log.pub, as ca init wrote it.
	verifierKey string
	// peer is an enrolled identity that renew() renews, for bulk issuance.
	peer *identity.Identity

	mu sync.Mutex
	db *sql.DB
}

// startCA runs a fresh CA service on SQLite (storeURL "") or the store
// given, with its HTTP listener, and enrolls one identity for bulk renewals.
func startCA(t testing.TB, storeURL string) *caEnv {
	t.Helper()
	e := &caEnv{CA: testenv.StartCA(t, testenv.Options{StoreURL: storeURL, HTTP: true})}
	t.Cleanup(func() {
		e.mu.Lock()
		if e.db != nil {
			e.db.Close()
		}
		e.mu.Unlock()
	})
	pub, err := os.ReadFile(filepath.Join(e.Dir, logkey.VerifierFile))
	if err != nil {
		t.Fatalf("ca init must write the log's verifier key: %v", err)
	}
	e.verifierKey = strings.TrimSpace(string(pub))
	e.peer = e.Enroll(t, "spiffe://example.org/ns/bulk/peer", api.TokenRequest{})
	return e
}

// token makes a join token for id.
func (e *caEnv) token(t testing.TB, id string, req api.TokenRequest) *api.TokenResponse {
	t.Helper()
	req.SPIFFEID = id
	resp, err := e.Admin.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// enrollWithIndex enrolls through the API's Enroll call and returns the
// certificate and the log index the CA answered with.
func (e *caEnv) enrollWithIndex(t testing.TB, id string) (*x509.Certificate, int64) {
	t.Helper()
	tok := e.token(t, id, api.TokenRequest{})
	cl, err := client.New([]string{e.URL}, []*x509.Certificate{e.Root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.CloseIdleConnections()
	resp, err := cl.Enroll(context.Background(), api.EnrollRequest{Token: tok.Token, CSR: string(newCSR(t))})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		t.Fatal(err)
	}
	return chain[0], resp.LogIndex
}

// renew renews id once over mTLS.
func (e *caEnv) renew(t testing.TB, id *identity.Identity) *identity.Identity {
	t.Helper()
	next, err := client.RenewIdentity(context.Background(), id, []string{e.URL}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

func newCSR(t testing.TB) []byte {
	t.Helper()
	k, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return pki.EncodeCSR(der)
}

// issueMany issues n certificates by renewing e.peer in-process (the CA's
// own pipeline, without HTTP), from a few goroutines so that the store's
// group commit batches them. It returns them in no particular order.
func (e *caEnv) issueMany(t testing.TB, n int) []*x509.Certificate {
	t.Helper()
	csrs := make([][]byte, n)
	for i := range csrs {
		csrs[i] = newCSR(t)
	}
	out := make([]*x509.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				is, err := e.Authority(t).Renew(context.Background(), e.peer.Leaf(), csrs[i], 0)
				if err != nil {
					errs[i] = err
					continue
				}
				out[i], errs[i] = is.Certificate()
			}
		}(w)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

// logClient is mutual's own log client for this CA, trusting only log.pub.
func (e *caEnv) logClient() *translog.Client {
	return &translog.Client{Base: e.HTTPURL, VerifierKey: e.verifierKey}
}

// logSize is the number of entries the store holds.
func (e *caEnv) logSize(t testing.TB) int64 {
	t.Helper()
	n, err := e.Store(t).LogSize(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// settle waits until the served checkpoint covers every entry in the store
// and returns it.
func (e *caEnv) settle(t testing.TB) *translog.Checkpoint {
	t.Helper()
	return waitCheckpoint(t, e.logClient(), e.logSize(t))
}

// waitCheckpoint polls until the log serves a verified checkpoint of at
// least size entries.
func waitCheckpoint(t testing.TB, cl *translog.Client, size int64) *translog.Checkpoint {
	t.Helper()
	var cp *translog.Checkpoint
	testwait.EventuallyNil(t, func() error {
		c, err := cl.Checkpoint(context.Background())
		if err != nil {
			return err
		}
		if c.Size < size {
			return fmt.Errorf("the checkpoint covers %d entries", c.Size)
		}
		cp = c
		return nil
	}, fmt.Sprintf("a checkpoint of %d entries", size))
	return cp
}

// sql opens the store's SQLite file directly, beside the running service
// (WAL mode lets both in), as an attacker with access to the disk would.
func (e *caEnv) sql(t testing.TB) *sql.DB {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.db == nil {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(e.Dir, pki.DatabaseFile)+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		e.db = db
	}
	return e.db
}

func (e *caEnv) exec(t testing.TB, q string, args ...any) int64 {
	t.Helper()
	res, err := e.sql(t).Exec(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	n, _ := res.RowsAffected()
	return n
}

// signer is the log's own key, loaded as the service loads it.
func (e *caEnv) signer(t testing.TB) *translog.Signer {
	t.Helper()
	s, err := translog.LoadOrCreateKey(e.Dir, e.TrustDomain.Name(), []byte(testca.Passphrase), 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Verifier != e.verifierKey {
		t.Fatalf("the log key's verifier %q is not log.pub's %q", s.Verifier, e.verifierKey)
	}
	return s
}

// ---------------------------------------------------------------------------
// The real binary, built once (as cmd/mutual's end-to-end tests do) and only
// by the tests that run it.

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func mutualBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "mutual-translog-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "mutual")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/mutual-tls/mutual/cmd/mutual").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/mutual: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// cmdEnv is the test's environment without anything of mutual's.
func cmdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MUTUAL_") {
			env = append(env, kv)
		}
	}
	return env
}

type result struct {
	stdout, stderr string
	code           int
}

// runMutual runs the binary to completion.
func runMutual(t testing.TB, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyNet)
	defer cancel()
	cmd := exec.CommandContext(ctx, mutualBinary(t), args...)
	cmd.Env = cmdEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("mutual %s: still running after %s; stderr:\n%s", strings.Join(args, " "), safetyNet, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("mutual %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustMutual runs the binary and fails the test unless it exits 0.
func mustMutual(t testing.TB, args ...string) string {
	t.Helper()
	r := runMutual(t, args...)
	if r.code != 0 {
		t.Fatalf("mutual %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// mustFailOneLine runs the binary and checks the error contract: exit 1,
// nothing on stdout, one line "mutual: ..." on stderr naming every one of
// want (case-insensitively). It returns that line.
func mustFailOneLine(t testing.TB, want []string, args ...string) string {
	t.Helper()
	r := runMutual(t, args...)
	what := "mutual " + strings.Join(args, " ")
	if r.code != 1 {
		t.Errorf("%s: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
		return ""
	}
	if r.stdout != "" {
		t.Errorf("%s: printed on stdout although it failed:\n%s", what, r.stdout)
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	if line == "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, "mutual: ") {
		t.Errorf("%s: stderr is not one line \"mutual: ...\":\n%s", what, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
			t.Errorf("%s: error %q does not name %q", what, line, w)
		}
	}
	t.Logf("mutual %s %s → %s", args[0], args[1], line)
	return line
}
