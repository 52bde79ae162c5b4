package main

// Several CA replicas on one PostgreSQL (issue 8). A real PostgreSQL is
// started in the test (internal/pgtest), one CA directory is made with
// `mutual ca init` and shared by three real `mutual server` processes on
// loopback, each listing all three addresses with --url. The tests kill a
// replica with SIGKILL under load, restart the database under load, and
// revoke through one replica while a proxy follows the feed of another.
// Afterwards every certificate a client received must be in the store and in
// the issuance log, no serial or token may have been used twice, and the log
// must verify (inclusion and consistency). BenchmarkReplicas measures
// issuance throughput with one, two and three replicas on one PostgreSQL.
//
// No assertion is about time: waits are bounded by safetyNet only, and
// latencies are logged.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
)

const repTD = "example.org"

// ---------------------------------------------------------------------------
// Processes (the e2e helpers take testing.TB, for the benchmark too)

// repTerminate sends SIGTERM and checks that the process exits 0.
func repTerminate(tb testing.TB, what string, p *proc) {
	tb.Helper()
	if p.exited() {
		tb.Errorf("%s had already exited: %v\n%s", what, p.err, p.stderr)
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(safetyNet):
		tb.Fatalf("%s still running %s after SIGTERM", what, safetyNet)
	}
	if p.err != nil {
		tb.Errorf("%s after SIGTERM: %v (want exit 0); stderr:\n%s", what, p.err, p.stderr)
	}
}

// repInitCA makes the CA directory every replica shares.
func repInitCA(tb testing.TB) (caDir, passFile string) {
	tb.Helper()
	tmp := tb.TempDir()
	passFile = filepath.Join(tmp, "pass")
	if err := os.WriteFile(passFile, []byte(testPassphrase+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	caDir = filepath.Join(tmp, "ca")
	mustMutual(tb, "ca", "init", "--dir", caDir, "--trust-domain", repTD, "--passphrase-file", passFile,
		"--san", "127.0.0.1", "--san", "localhost")
	return caDir, passFile
}

// ---------------------------------------------------------------------------
// A cluster: N `mutual server` replicas of one CA on one database

type repCluster struct {
	tb        testing.TB
	caDir     string
	passFile  string
	store     string
	apiAddrs  []string
	httpAddrs []string
	urls      []string // https://API_i, in --url order
	reps      []*proc
	admin     *identity.Identity
	roots     []*x509.Certificate
	verifier  string
}

// newRepCluster starts n replicas of the CA in caDir on storeURL, all at
// once (their migrations race under the store's advisory lock), and waits
// until each answers /readyz.
func newRepCluster(tb testing.TB, caDir, passFile, storeURL string, n int) *repCluster {
	tb.Helper()
	c := &repCluster{tb: tb, caDir: caDir, passFile: passFile, store: storeURL, reps: make([]*proc, n)}
	for range n {
		a, h := freeAddr(tb), freeAddr(tb)
		c.apiAddrs = append(c.apiAddrs, a)
		c.httpAddrs = append(c.httpAddrs, h)
		c.urls = append(c.urls, "https://"+a)
	}
	admin, err := identity.Load(filepath.Join(caDir, "admin"))
	if err != nil {
		tb.Fatal(err)
	}
	c.admin, c.roots = admin, admin.Roots
	pub, err := os.ReadFile(filepath.Join(caDir, "log.pub"))
	if err != nil {
		tb.Fatal(err)
	}
	c.verifier = strings.TrimSpace(string(pub))
	for i := range n {
		c.start(i)
	}
	for i := range n {
		c.waitReady(tb, i)
	}
	return c
}

func (c *repCluster) start(i int) {
	st := c.store
	if strings.HasPrefix(st, "postgres") {
		// Each replica's sessions are named, so that a test can tell from
		// pg_stat_activity which replica holds a lock.
		st += fmt.Sprintf("&application_name=mutual-replica-%d", i)
	}
	args := []string{"server", "--dir", c.caDir, "--passphrase-file", c.passFile, "--store", st,
		"--listen", c.apiAddrs[i], "--http-listen", c.httpAddrs[i]}
	for _, u := range c.urls {
		args = append(args, "--url", u)
	}
	cmd := exec.Command(mutualBin, args...)
	cmd.Env = cmdEnv()
	c.reps[i] = startProc(c.tb, cmd)
}

// waitReady polls GET /readyz of replica i until it answers 200.
func (c *repCluster) waitReady(tb testing.TB, i int) {
	tb.Helper()
	hc := c.httpClient(nil)
	defer hc.CloseIdleConnections()
	testwait.EventuallyNil(tb, func() error {
		p := c.reps[i]
		if p.exited() {
			tb.Fatalf("replica %d exited before it was ready: %v; stderr:\n%s", i, p.err, p.stderr)
		}
		resp, err := hc.Get(c.urls[i] + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d; stderr:\n%s", resp.StatusCode, p.stderr)
		}
		return nil
	}, fmt.Sprintf("replica %d to answer GET /readyz with 200", i))
}

// kill sends SIGKILL to replica i: no graceful anything.
func (c *repCluster) kill(tb testing.TB, i int) {
	tb.Helper()
	p := c.reps[i]
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	<-p.done
}

// stopAll stops every running replica with SIGTERM and checks each exits 0.
func (c *repCluster) stopAll(tb testing.TB) {
	tb.Helper()
	for i, p := range c.reps {
		if !p.exited() {
			repTerminate(tb, fmt.Sprintf("replica %d", i), p)
		}
	}
}

func (c *repCluster) urlsIn(order []int) []string {
	var out []string
	for _, i := range order {
		out = append(out, c.urls[i])
	}
	return out
}

func (c *repCluster) pool() *x509.CertPool {
	return pki.CertPool(c.roots)
}

// httpClient trusts the CA's roots and presents cert if not nil.
func (c *repCluster) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: c.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 20 * time.Second}
}

func (c *repCluster) adminClient(tb testing.TB, order []int) *client.Client {
	tb.Helper()
	tc := c.admin.TLSCertificate()
	cl, err := client.New(c.urlsIn(order), c.roots, &tc)
	if err != nil {
		tb.Fatal(err)
	}
	return cl
}

func (c *repCluster) logClient(i int) *translog.Client {
	return &translog.Client{Base: c.urls[i], VerifierKey: c.verifier, HTTP: c.httpClient(nil)}
}

// checkpoint reads and verifies replica i's latest checkpoint, waiting
// until it has one of at least min entries.
func (c *repCluster) checkpoint(tb testing.TB, i int, minSize int64) *translog.Checkpoint {
	tb.Helper()
	lc := c.logClient(i)
	var cp *translog.Checkpoint
	testwait.EventuallyNil(tb, func() error {
		var err error
		if cp, err = lc.Checkpoint(context.Background()); err != nil {
			return err
		}
		if cp.Size < minSize {
			return fmt.Errorf("size %d", cp.Size)
		}
		return nil
	}, fmt.Sprintf("replica %d to have a checkpoint of at least %d entries", i, minSize))
	return cp
}

// replicaOf says which replica issued cert: each one's certificates point
// at its own --http-listen for the CRL.
func (c *repCluster) replicaOf(cert *x509.Certificate) int {
	for _, dp := range cert.CRLDistributionPoints {
		for i, h := range c.httpAddrs {
			if strings.HasPrefix(dp, "http://"+h+"/") {
				return i
			}
		}
	}
	return -1
}

// get fetches path from replica i as cert (nil: no client certificate).
func (c *repCluster) get(tb testing.TB, i int, path string, cert *tls.Certificate) (int, http.Header, []byte) {
	tb.Helper()
	hc := c.httpClient(cert)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(c.urls[i] + path)
	if err != nil {
		tb.Fatalf("GET %s%s: %v", c.urls[i], path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// storedCertificates lists every certificate in the store, with its PEM, as
// replica i's admin API answers.
func (c *repCluster) storedCertificates(tb testing.TB, i int) map[string]api.CertificateInfo {
	tb.Helper()
	tc := c.admin.TLSCertificate()
	st, _, body := c.get(tb, i, "/v1/certificates?pem=true&limit=100000", &tc)
	if st != http.StatusOK {
		tb.Fatalf("replica %d: GET /v1/certificates: HTTP %d: %s", i, st, body)
	}
	var l api.CertificateList
	if err := json.Unmarshal(body, &l); err != nil {
		tb.Fatal(err)
	}
	if len(l.Certificates) >= 100000 {
		tb.Fatalf("%d certificates: the listing stops at 100000; make the test issue fewer", len(l.Certificates))
	}
	out := map[string]api.CertificateInfo{}
	for _, ci := range l.Certificates {
		if _, dup := out[ci.Serial]; dup {
			tb.Errorf("replica %d lists serial %s twice", i, ci.Serial)
		}
		out[ci.Serial] = ci
	}
	return out
}

// ---------------------------------------------------------------------------
// Load: workers that enroll and renew, retrying transient failures

// repClassify names an error and says whether it is transient: the CA
// answered 503 (or 502/504), or the connection failed. Anything else is a
// definite answer.
func repClassify(err error) (string, bool) {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return fmt.Sprintf("HTTP %d %s", ae.Status, ae.Code), ae.Unavailable()
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", true
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset", true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF", true
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", true
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "connection reset", "broken pipe", "EOF", "http2:", "timeout"} {
		if strings.Contains(msg, s) {
			return "transport: " + s, true
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "network", true
	}
	return "other", false
}

type repLoad struct {
	c      *repCluster
	t      *testing.T
	stop   chan struct{}
	wg     sync.WaitGroup
	issued atomic.Int64
	fails  atomic.Int64
	live   atomic.Int64

	mu       sync.Mutex
	phase    string
	phases   []string
	received map[string]*x509.Certificate // serial → what a client got
	tokens   map[string]string            // token ID → serial received with it
	lost     map[string]string            // token ID → what happened
	ops      int                          // operations that succeeded
	retried  int                          // of which after one or more failures
	retries  int                          // failed attempts retried
	errs     map[string]int               // "what: kind" → count
	hard     []string                     // definite failures
	spread   map[string][]int             // phase → certificates per replica
	maxWait  time.Duration                // longest time an operation spent retrying
}

func newRepLoad(t *testing.T, c *repCluster) *repLoad {
	return &repLoad{c: c, t: t, stop: make(chan struct{}), received: map[string]*x509.Certificate{},
		tokens: map[string]string{}, lost: map[string]string{}, errs: map[string]int{}, spread: map[string][]int{}}
}

func (l *repLoad) setPhase(p string) {
	l.mu.Lock()
	l.phase = p
	l.phases = append(l.phases, p)
	l.mu.Unlock()
}

// retry runs f until it succeeds, backing off on transient failures (100ms
// doubling to 1s). It gives up on a definite failure, or after safetyNet.
func (l *repLoad) retry(what string, f func(ctx context.Context) error) error {
	backoff := 100 * time.Millisecond
	var firstFail time.Time
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := f(ctx)
		cancel()
		l.mu.Lock()
		if err == nil {
			l.ops++
			if attempt > 0 {
				l.retried++
				l.maxWait = max(l.maxWait, time.Since(firstFail))
			}
			l.mu.Unlock()
			return nil
		}
		kind, transient := repClassify(err)
		l.errs[what+": "+kind]++
		l.mu.Unlock()
		if !transient {
			return err
		}
		l.fails.Add(1)
		if firstFail.IsZero() {
			firstFail = time.Now()
		}
		if time.Since(firstFail) > safetyNet {
			return fmt.Errorf("%s still failing after %s of retries: %w", what, safetyNet, err)
		}
		l.mu.Lock()
		l.retries++
		l.mu.Unlock()
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func (l *repLoad) hardFailure(format string, a ...any) {
	l.mu.Lock()
	l.hard = append(l.hard, fmt.Sprintf(format, a...))
	l.mu.Unlock()
}

func (l *repLoad) record(tokenID string, id *identity.Identity) {
	leaf := id.Leaf()
	serial := pki.FormatSerial(leaf.SerialNumber)
	l.mu.Lock()
	if _, dup := l.received[serial]; dup {
		l.hard = append(l.hard, "serial "+serial+" was received twice")
	}
	l.received[serial] = leaf
	if tokenID != "" {
		l.tokens[tokenID] = serial
	}
	if l.spread[l.phase] == nil {
		l.spread[l.phase] = make([]int, len(l.c.urls)+1)
	}
	l.spread[l.phase][l.c.replicaOf(leaf)+1]++
	l.mu.Unlock()
	l.issued.Add(1)
}

// enrollVia enrolls with tok at urls in that order (RequestIdentity takes
// the order the token carries; this spreads enrollments too).
// The caller keeps key across its retries of one token, as a client must:
// the CA answers a retry with the same key the certificate an earlier
// attempt paid the token for, whose answer may have been lost.
func (l *repLoad) enrollVia(ctx context.Context, urls []string, tok string, key crypto.Signer) (*identity.Identity, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(urls, l.c.roots, nil)
	if err != nil {
		return nil, err
	}
	defer cl.CloseIdleConnections()
	resp, err := cl.Enroll(ctx, api.EnrollRequest{Token: tok, CSR: string(pki.EncodeCSR(der))})
	if err != nil {
		return nil, err
	}
	chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
	if err != nil {
		return nil, err
	}
	if _, err := pki.VerifyChain(chain, l.c.roots, time.Time{}, x509.ExtKeyUsageAny); err != nil {
		return nil, fmt.Errorf("enrolled certificate does not verify: %w", err)
	}
	if !pki.PublicKeysEqual(chain[0].PublicKey, key.Public()) {
		return nil, errors.New("enrolled certificate is for another key")
	}
	sid, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	return &identity.Identity{ID: sid, Chain: chain, Key: key, Roots: l.c.roots}, nil
}

// worker w enrolls (half through RequestIdentity, half through its own URL
// order) and renews twice, until the load stops. order is the replica order
// of its clients.
func (l *repLoad) worker(w int, order []int) {
	admin := l.c.adminClient(l.t, order)
	pending := l.t.TempDir()
	l.wg.Add(1)
	l.live.Add(1)
	go func() {
		defer l.wg.Done()
		defer l.live.Add(-1)
		spiffeID := fmt.Sprintf("spiffe://%s/ns/load/w%d", repTD, w)
		defer admin.CloseIdleConnections()
		urls := l.c.urlsIn(order)
		for iter := 0; ; iter++ {
			select {
			case <-l.stop:
				return
			default:
			}
			var tok *api.TokenResponse
			if err := l.retry("token create", func(ctx context.Context) error {
				var err error
				tok, err = admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: spiffeID, TTL: api.Duration(30 * time.Minute)})
				return err
			}); err != nil {
				l.hardFailure("worker %d: token create: %v", w, err)
				return
			}
			// Every retry of this token uses the same key (RequestIdentity
			// keeps it in pending, as `cert request` does), so an answer
			// lost in a failover is answered again, not refused.
			var cur *identity.Identity
			key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
			if err != nil {
				l.hardFailure("worker %d: key: %v", w, err)
				return
			}
			err = l.retry("enroll", func(ctx context.Context) error {
				if iter%2 == 0 {
					enr, err := client.RequestIdentityWith(ctx, tok.Token, client.RequestOptions{KeepKeyIn: pending})
					if err == nil {
						cur = enr.Identity
						err = enr.Done()
					}
					return err
				}
				id, err := l.enrollVia(ctx, urls, tok.Token, key)
				cur = id
				return err
			})
			var ae *client.APIError
			if errors.As(err, &ae) && ae.Code == "token_used" {
				// Only this worker holds the token: an earlier attempt
				// (perhaps one client.do failed over from) consumed it,
				// and its answer never arrived.
				l.mu.Lock()
				l.lost[tok.ID] = fmt.Sprintf("worker %d, phase %q: %v", w, l.phase, err)
				l.mu.Unlock()
				continue
			}
			if err != nil {
				l.hardFailure("worker %d: enroll: %v", w, err)
				return
			}
			l.record(tok.ID, cur)
			for range 2 {
				select {
				case <-l.stop:
					return
				default:
				}
				var next *identity.Identity
				if err := l.retry("renew", func(ctx context.Context) error {
					var err error
					next, err = client.RenewIdentity(ctx, cur, urls, "", 0)
					return err
				}); err != nil {
					l.hardFailure("worker %d: renew: %v", w, err)
					return
				}
				l.record("", next)
				cur = next
			}
		}
	}()
}

// waitIssued waits until n more certificates than now have been received.
func (l *repLoad) waitIssued(tb testing.TB, n int64, what string) {
	tb.Helper()
	target := l.issued.Load() + n
	testwait.Eventually(tb, func() bool {
		if l.live.Load() == 0 {
			tb.Fatalf("%s: every load worker stopped: %v", what, l.hardList())
		}
		return l.issued.Load() >= target
	}, fmt.Sprintf("%s: %d certificates received", what, target))
}

func (l *repLoad) hardList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.hard)
}

// finish stops the load, waits for in-flight operations (each retries until
// it succeeds), and reports what happened.
func (l *repLoad) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.hard {
		t.Errorf("client operation failed for good: %s", h)
	}
	var kinds []string
	for k, n := range l.errs {
		kinds = append(kinds, fmt.Sprintf("%s ×%d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("load: %d operations succeeded (%d certificates received), %d of them after retries; %d failed attempts retried with backoff (on top of the client library's own rounds over every address); longest retry sequence %s",
		l.ops, len(l.received), l.retried, l.retries, l.maxWait.Round(time.Millisecond))
	if len(kinds) > 0 {
		t.Logf("failed attempts: %s", strings.Join(kinds, "; "))
	}
	if len(l.lost) > 0 {
		t.Logf("%d enrollments lost their answer (token consumed, answer never received)", len(l.lost))
	}
	for _, p := range l.phases {
		if s := l.spread[p]; s != nil {
			t.Logf("certificates received while %-34s per replica %v (unknown: %d)", p+":", s[1:], s[0])
		}
	}
}

// ---------------------------------------------------------------------------
// The audit: store, tokens and log agree with what the clients received

func (c *repCluster) audit(t *testing.T, l *repLoad, first *translog.Checkpoint, alive []int) *translog.Checkpoint {
	t.Helper()
	ctx := context.Background()

	// The store, as every live replica's admin API lists it.
	stored := c.storedCertificates(t, alive[0])
	for _, i := range alive[1:] {
		other := c.storedCertificates(t, i)
		if len(other) != len(stored) {
			t.Errorf("replica %d lists %d certificates, replica %d %d", i, len(other), alive[0], len(stored))
		}
	}
	var received map[string]*x509.Certificate
	var tokens, lost map[string]string
	if l != nil {
		received, tokens, lost = l.received, l.tokens, l.lost
	}
	for serial, cert := range received {
		ci, ok := stored[serial]
		if !ok {
			t.Errorf("certificate %s was received by a client but is not in the store", serial)
			continue
		}
		if ci.CertificatePEM != string(pki.EncodeCertificates(cert)) {
			t.Errorf("certificate %s: the store holds other bytes than the client received", serial)
		}
	}

	// Tokens: single use. A token's used_serial is unique, and at most one
	// certificate was requested by it: the one it names.
	tl, err := c.adminClient(t, alive).ListTokens(ctx)
	if err != nil {
		t.Fatalf("list tokens: %v", err)
	}
	if len(tl.Tokens) >= 1000 {
		t.Fatalf("%d tokens: the admin API pages at 1000", len(tl.Tokens))
	}
	byToken := map[string][]string{}
	for s, ci := range stored {
		if id, ok := strings.CutPrefix(ci.RequestedBy, "token:"); ok {
			byToken[id] = append(byToken[id], s)
		}
	}
	usedSerials := map[string]string{}
	tokenInfo := map[string]api.TokenInfo{}
	for _, ti := range tl.Tokens {
		tokenInfo[ti.ID] = ti
		certs := byToken[ti.ID]
		if len(certs) > 1 {
			t.Errorf("token %s yielded %d certificates: %v", ti.ID, len(certs), certs)
		}
		if ti.UsedAt == nil {
			if len(certs) > 0 {
				t.Errorf("token %s is unused, yet certificates %v name it", ti.ID, certs)
			}
			continue
		}
		if prev, dup := usedSerials[ti.UsedSerial]; dup {
			t.Errorf("serial %s consumed tokens %s and %s", ti.UsedSerial, prev, ti.ID)
		}
		usedSerials[ti.UsedSerial] = ti.ID
		if len(certs) != 1 || certs[0] != ti.UsedSerial {
			t.Errorf("token %s was used for %s, but the certificates requested by it are %v", ti.ID, ti.UsedSerial, certs)
		}
	}
	for id := range byToken {
		if _, ok := tokenInfo[id]; !ok {
			t.Errorf("certificates %v name token %s, which is not in the store", byToken[id], id)
		}
	}
	for id, serial := range tokens {
		if ti := tokenInfo[id]; ti.UsedSerial != serial {
			t.Errorf("a client enrolled with token %s and received %s, the store says the token was used for %q", id, serial, ti.UsedSerial)
		}
	}
	for id, what := range lost {
		ti := tokenInfo[id]
		_, inStore := stored[ti.UsedSerial]
		t.Errorf("enrollment lost (%s): token %s was consumed by certificate %s (in the store: %v) whose answer never reached the client; "+
			"retrying with the same token is refused with token_used, so this client error outlasts the failover backoff", what, id, ti.UsedSerial, inStore)
	}

	// The log: exactly the stored certificates, once each, in a tree that
	// every replica signs the same and that extends the first checkpoint.
	cp := c.checkpoint(t, alive[0], int64(len(stored)))
	if cp.Size != int64(len(stored)) {
		t.Errorf("the log has %d entries, the store %d certificates: something is half-written", cp.Size, len(stored))
	}
	lc := c.logClient(alive[0])
	entries, err := lc.Entries(ctx, cp, 0, cp.Size)
	if err != nil {
		t.Fatalf("log entries: %v", err)
	}
	inLog := map[string]int{}
	for i, raw := range entries {
		e, err := translog.ParseEntry(raw)
		if err != nil {
			t.Errorf("log entry %d: %v", i, err)
			continue
		}
		cert, err := x509.ParseCertificate(e.Certificate)
		if err != nil {
			t.Errorf("log entry %d: %v", i, err)
			continue
		}
		s := pki.FormatSerial(cert.SerialNumber)
		if prev, dup := inLog[s]; dup {
			t.Errorf("serial %s is in the log twice: entries %d and %d", s, prev, i)
		}
		inLog[s] = i
		ci, ok := stored[s]
		switch {
		case !ok:
			t.Errorf("log entry %d (%s) is not in the store", i, s)
		case ci.RequestedBy != string(e.RequestedBy):
			t.Errorf("log entry %d (%s): requested by %q, the store says %q", i, s, e.RequestedBy, ci.RequestedBy)
		}
	}
	for s := range stored {
		if _, ok := inLog[s]; !ok {
			t.Errorf("certificate %s is in the store but not in the log", s)
		}
	}
	// Inclusion proofs for every received certificate, asked of every
	// replica in turn.
	lcs := map[int]*translog.Client{}
	for _, i := range alive {
		lcs[i] = c.logClient(i)
	}
	serials := slices.Sorted(func(yield func(string) bool) {
		for s := range received {
			if !yield(s) {
				return
			}
		}
	})
	for k, s := range serials {
		i := alive[k%len(alive)]
		if _, _, err := lcs[i].ProveCertificate(ctx, cp, received[s]); err != nil {
			t.Errorf("inclusion of %s (asked of replica %d): %v", s, i, err)
		}
	}
	// Consistency: the first checkpoint seen is a prefix of the last, and
	// every replica's checkpoint is on the same tree.
	if err := lc.CheckConsistency(ctx, first, cp); err != nil {
		t.Errorf("consistency from %d to %d entries: %v", first.Size, cp.Size, err)
	}
	for _, i := range alive {
		cpi := c.checkpoint(t, i, cp.Size)
		if cpi.Size == cp.Size && cpi.Hash != cp.Hash {
			t.Errorf("replicas %d and %d sign different trees of %d entries", alive[0], i, cp.Size)
		}
		if err := lcs[i].CheckConsistency(ctx, first, cpi); err != nil {
			t.Errorf("replica %d: consistency from %d to %d entries: %v", i, first.Size, cpi.Size, err)
		}
	}
	t.Logf("audit: %d certificates in the store and in the log (%d received by clients, all proved); log consistent from %d to %d entries",
		len(stored), len(received), first.Size, cp.Size)
	return cp
}

// ---------------------------------------------------------------------------
// 1. A replica killed with SIGKILL under load, then restarted

func TestReplicasFailover(t *testing.T) {
	pg := pgtest.Start(t)
	caDir, pass := repInitCA(t)
	c := newRepCluster(t, caDir, pass, pg.NewDatabase(t), 3)
	first := c.checkpoint(t, 1, 1)

	l := newRepLoad(t, c)
	l.setPhase("all three up")
	// Six clients, each replica first for two of them.
	for w, order := range [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {1, 0, 2}, {2, 1, 0}} {
		l.worker(w, order)
	}
	l.waitIssued(t, 40, "before the kill")

	c.kill(t, 0)
	l.setPhase("replica 0 killed (SIGKILL)")
	t.Logf("replica 0 killed with SIGKILL after %d certificates", l.issued.Load())
	l.waitIssued(t, 60, "with replica 0 dead")

	c.start(0)
	c.waitReady(t, 0)
	l.setPhase("replica 0 restarted")
	t.Logf("replica 0 restarted on %s after %d certificates", c.apiAddrs[0], l.issued.Load())
	l.waitIssued(t, 60, "after the restart")
	l.finish(t)

	l.mu.Lock()
	for _, p := range l.phases {
		s := l.spread[p]
		for i := range c.urls {
			if s == nil || s[i+1] == 0 {
				if p == "replica 0 killed (SIGKILL)" && i == 0 {
					continue
				}
				t.Errorf("while %s, replica %d issued no certificate a client received: the load is not spread (%v)", p, i, s)
			}
		}
	}
	l.mu.Unlock()

	c.audit(t, l, first, []int{0, 1, 2})
	c.stopAll(t)
}

// ---------------------------------------------------------------------------
// 2. The database restarted under load

func TestReplicasDatabaseRestart(t *testing.T) {
	pg := pgtest.Start(t)
	caDir, pass := repInitCA(t)
	c := newRepCluster(t, caDir, pass, pg.NewDatabase(t), 3)
	first := c.checkpoint(t, 0, 1)
	ctx := context.Background()

	// What the outage checks use: an unused token and a live identity.
	admin := c.adminClient(t, []int{0, 1, 2})
	probeTok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://" + repTD + "/ns/probe/enroll"})
	if err != nil {
		t.Fatal(err)
	}
	renTok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://" + repTD + "/ns/probe/renew"})
	if err != nil {
		t.Fatal(err)
	}
	probe, err := client.RequestIdentity(ctx, renTok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}

	l := newRepLoad(t, c)
	l.setPhase("database up")
	for w, order := range [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}} {
		l.worker(w, order)
	}
	l.waitIssued(t, 30, "before the database stops")

	failsBefore := l.fails.Load()
	stopping := time.Now()
	pg.Stop(t)
	l.setPhase("database stopped")
	t.Logf("PostgreSQL stopped after %d certificates (pg_ctl stop took %s)", l.issued.Load(), time.Since(stopping).Round(time.Millisecond))

	// Every replica: alive, not ready, still serving what needs no database.
	for i := range c.urls {
		for _, tc := range []struct {
			path string
			want int
		}{{"/livez", 200}, {"/readyz", 503}, {"/healthz", 503}, {"/v1/bundle", 200}} {
			if st, _, body := c.get(t, i, tc.path, nil); st != tc.want {
				t.Errorf("replica %d with the database down: GET %s: HTTP %d, want %d: %s", i, tc.path, st, tc.want, body)
			}
		}
	}
	// A refusal is clean: 503, store_unavailable, Retry-After; as a raw
	// request and as the client library sees it.
	body, _ := json.Marshal(api.EnrollRequest{Token: probeTok.Token, CSR: testca.CSR(t, nil)})
	hc := c.httpClient(nil)
	defer hc.CloseIdleConnections()
	resp, err := hc.Post(c.urls[1]+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var apiErr api.Error
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(raw, &apiErr) != nil || apiErr.Code != "store_unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("POST /v1/enroll with the database down: HTTP %d, Retry-After %q: %s; want 503, store_unavailable and a Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), raw)
	}
	// The client library retries every address with backoff before it
	// gives up: the four probes run side by side. The admin ones make one
	// round only, to see the first answer.
	probes := map[string]func() error{
		"enroll": func() error {
			_, err := client.RequestIdentity(ctx, probeTok.Token, pki.KeyECDSAP256, 0)
			return err
		},
		"renew": func() error {
			_, err := client.RenewIdentity(ctx, probe.Identity, c.urlsIn([]int{2, 1, 0}), "", 0)
			return err
		},
		"list certificates": func() error {
			cl := c.adminClient(t, []int{1})
			cl.Retries = -1
			_, err := cl.ListCertificates(ctx, "", false)
			return err
		},
		"revoke": func() error {
			cl := c.adminClient(t, []int{2})
			cl.Retries = -1
			_, err := cl.Revoke(ctx, api.RevokeRequest{Serial: pki.FormatSerial(probe.Identity.Leaf().SerialNumber)})
			return err
		},
	}
	var pwg sync.WaitGroup
	for what, f := range probes {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			err := f()
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != "store_unavailable" {
				t.Errorf("%s with the database down: %v; want HTTP 503 store_unavailable", what, err)
			}
		}()
	}
	pwg.Wait()

	// Let every load worker see the outage too.
	deadline := time.Now().Add(safetyNet)
	for l.fails.Load() < failsBefore+4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the database was down %s", time.Since(stopping).Round(time.Millisecond))
	starting := time.Now()
	pg.Start(t)
	l.setPhase("database restarted")
	t.Logf("PostgreSQL started again in %s; the load saw %d failed attempts while it was down", time.Since(starting).Round(time.Millisecond), l.fails.Load()-failsBefore)
	for i := range c.urls {
		c.waitReady(t, i)
	}
	t.Logf("every replica ready %s after the start", time.Since(starting).Round(time.Millisecond))
	l.waitIssued(t, 40, "after the database restarted")
	l.finish(t)

	// While it was down, clients saw clean 503s and nothing else.
	l.mu.Lock()
	for k, n := range l.errs {
		if !strings.HasSuffix(k, "HTTP 503 store_unavailable") {
			t.Errorf("with the database restarting, %d failed attempts were %q, not a clean 503 store_unavailable", n, k)
		}
	}
	l.mu.Unlock()

	// The probe token, refused while the database was away, was not spent.
	after, err := client.RequestIdentity(ctx, probeTok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatalf("the token refused during the outage, after it: %v", err)
	}
	for tok, id := range map[string]*identity.Identity{probeTok.ID: after.Identity, renTok.ID: probe.Identity} {
		s := pki.FormatSerial(id.Leaf().SerialNumber)
		l.received[s], l.tokens[tok] = id.Leaf(), s
	}
	c.audit(t, l, first, []int{0, 1, 2})
	c.stopAll(t)
}

// ---------------------------------------------------------------------------
// 3. A revocation recorded on replica A reaches a proxy following replica B

func TestReplicasRevocationFeed(t *testing.T) {
	pg := pgtest.Start(t)
	caDir, pass := repInitCA(t)
	c := newRepCluster(t, caDir, pass, pg.NewDatabase(t), 3)
	first := c.checkpoint(t, 2, 1)
	ctx := context.Background()
	const replicaA, replicaB = 0, 1
	admin := c.adminClient(t, []int{2, 0, 1})

	// The proxy's identity, enrolled with the real CLI.
	proxyTok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://" + repTD + "/ns/prod/echo", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	proxyDir := filepath.Join(t.TempDir(), "proxy")
	mustMutual(t, "cert", "request", "--token", proxyTok.Token, "--out", proxyDir)

	// The caller's identity.
	callerID := "spiffe://" + repTD + "/ns/prod/caller"
	callerTok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: callerID})
	if err != nil {
		t.Fatal(err)
	}
	enr, err := client.RequestIdentity(ctx, callerTok.Token, pki.KeyECDSAP256, 0)
	if err != nil {
		t.Fatal(err)
	}
	caller := enr.Identity
	callerSerial := pki.FormatSerial(caller.Leaf().SerialNumber)

	// A small echo server behind the proxy.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			conn, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn)
			}()
		}
	}()

	proxyAddr := freeAddr(t)
	cmd := exec.Command(mutualBin, "proxy", "inbound", "--listen", proxyAddr, "--target", echo.Addr().String(),
		"--identity-dir", proxyDir, "--allow", callerID, "--mode", "strict", "--protocol", "tcp", "--ca", c.urls[replicaB])
	cmd.Env = cmdEnv()
	px := startProc(t, cmd)
	testwait.Eventually(t, func() bool {
		if px.exited() {
			t.Fatalf("the proxy exited: %v\n%s", px.err, px.stderr)
		}
		return px.stderr.Contains("revocation feed connected") && px.stderr.Contains("proxy listening")
	}, "the proxy to listen and connect to the revocation feed of replica B")
	if !strings.Contains(px.stderr.String(), c.urls[replicaB]) {
		t.Errorf("the proxy's feed is not replica B's (%s):\n%s", c.urls[replicaB], px.stderr)
	}

	tc := caller.TLSCertificate()
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{tc}, RootCAs: c.pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13}
	// roundTrip connects, sends a line and reads it back.
	roundTrip := func(conn *tls.Conn, line string) error {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		defer conn.SetDeadline(time.Time{})
		if _, err := io.WriteString(conn, line); err != nil {
			return err
		}
		buf := make([]byte, len(line))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != line {
			return fmt.Errorf("echo %q, want %q", buf, line)
		}
		return nil
	}
	live, err := tls.Dial("tcp", proxyAddr, tlsCfg)
	if err != nil {
		t.Fatalf("connect through the proxy: %v\n%s", err, px.stderr)
	}
	defer live.Close()
	if err := roundTrip(live, "hello before\n"); err != nil {
		t.Fatalf("echo through the proxy before the revocation: %v\n%s", err, px.stderr)
	}
	closed := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := live.Read(buf); err != nil {
				closed <- time.Now()
				return
			}
		}
	}()

	// Revoke on replica A only.
	revoker := c.adminClient(t, []int{replicaA})
	start := time.Now()
	rev, err := revoker.Revoke(ctx, api.RevokeRequest{Serial: callerSerial, Reason: "keyCompromise"})
	answered := time.Now()
	if err != nil {
		t.Fatalf("revoke on replica A: %v", err)
	}
	if len(rev.Revoked) != 1 || rev.Revoked[0].Serial != callerSerial {
		t.Errorf("revoke answered %+v, want %s", rev.Revoked, callerSerial)
	}
	select {
	case at := <-closed:
		t.Logf("live connection closed by the proxy following replica B %s after the revocation request to replica A (%s after its answer)",
			at.Sub(start).Round(time.Millisecond), max(at.Sub(answered), 0).Round(time.Millisecond))
	case <-time.After(safetyNet):
		t.Fatalf("the live connection was still open %s after the revocation; proxy log:\n%s", safetyNet, px.stderr)
	}

	// A new handshake is refused.
	refused := false
	deadline := time.Now().Add(safetyNet)
	for attempt := 1; !refused; attempt++ {
		conn, err := tls.Dial("tcp", proxyAddr, tlsCfg)
		if err == nil {
			err = roundTrip(conn, "hello after\n")
			conn.Close()
		}
		if err != nil {
			refused = true
			t.Logf("new connection refused (attempt %d, %s after the revocation request): %v", attempt, time.Since(start).Round(time.Millisecond), err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a revoked certificate still gets through the proxy %s after the revocation:\n%s", safetyNet, px.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The proxy says why, naming the serial.
	testwait.Eventually(t, func() bool {
		log := px.stderr.String()
		return strings.Contains(log, `"msg":"certificate revoked"`) && strings.Contains(log, `"connections_closed":1`) &&
			strings.Contains(log, `"msg":"handshake refused"`) && strings.Contains(log, `"reason":"revoked"`) && strings.Contains(log, callerSerial)
	}, "the proxy's log to show the revocation of "+callerSerial+" closing the connection and refusing the handshake")
	// Every replica records the revocation.
	for i := range c.urls {
		l, err := c.adminClient(t, []int{i}).ListCertificates(ctx, callerID, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Certificates) != 1 || l.Certificates[0].RevokedAt == nil || l.Certificates[0].RevocationReason != "keyCompromise" {
			t.Errorf("replica %d lists %s as %+v, want revoked (keyCompromise)", i, callerID, l.Certificates)
		}
	}
	repTerminate(t, "mutual proxy inbound", px)

	// The log verifies after it all.
	lr := newRepLoad(t, c)
	lr.received[callerSerial] = caller.Leaf()
	lr.received[pki.FormatSerial(leafOf(t, filepath.Join(proxyDir, "cert.pem")).SerialNumber)] = leafOf(t, filepath.Join(proxyDir, "cert.pem"))
	lr.tokens[callerTok.ID] = callerSerial
	c.audit(t, lr, first, []int{0, 1, 2})
	c.stopAll(t)
}

// ---------------------------------------------------------------------------
// 5. Issuance throughput with one, two and three replicas

// repPostgres is a PostgreSQL server with its default durability (fsync,
// synchronous_commit and full_page_writes on), unlike pgtest's; with
// REPLICAS_BENCH_FSYNC=off in the environment it runs relaxed like pgtest's,
// for comparison.
type repPostgres struct {
	bin, base, data string
	port            int
	url             string
	runAs           *user.User
	dbs             int
}

func repStartPostgres(tb testing.TB) *repPostgres {
	tb.Helper()
	bin := pgtest.Bin()
	if bin == "" {
		if os.Getenv("CI") != "" {
			tb.Fatal("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them")
		}
		tb.Skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql to run this benchmark")
	}
	base, err := os.MkdirTemp("", "mutual-bench-pg-*")
	if err != nil {
		tb.Fatal(err)
	}
	s := &repPostgres{bin: bin, base: base, data: filepath.Join(base, "data")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root, PostgreSQL needs the postgres user: %v", err)
		}
		s.runAs = u
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		os.Chmod(base, 0o755)
		if err := os.Chown(base, uid, gid); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		s.pgctl(tb, "-D", s.data, "-m", "fast", "-w", "stop")
		os.RemoveAll(base)
	})
	s.exec(tb, filepath.Join(bin, "initdb"), "-D", s.data, "-U", "mutual", "--auth=trust", "-E", "UTF8", "--locale=C")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	s.url = fmt.Sprintf("postgres://mutual@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200", s.port, s.data)
	want := "on"
	if os.Getenv("REPLICAS_BENCH_FSYNC") == "off" {
		// For comparison only: pgtest's relaxed durability.
		opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
		want = "off"
	}
	s.exec(tb, filepath.Join(bin, "pg_ctl"), "-D", s.data, "-l", filepath.Join(base, "server.log"), "-o", opts, "-w", "-t", "60", "start")
	db := s.open(tb)
	defer db.Close()
	for _, q := range []string{"SHOW fsync", "SHOW synchronous_commit", "SHOW full_page_writes"} {
		var v string
		if err := db.QueryRow(q).Scan(&v); err != nil {
			tb.Fatal(err)
		}
		if v != want {
			tb.Fatalf("%s: %s, want %s", q, v, want)
		}
	}
	return s
}

func (s *repPostgres) exec(tb testing.TB, name string, args ...string) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	if s.runAs != nil {
		cmd = exec.Command("runuser", append([]string{"-u", s.runAs.Username, "--", name}, args...)...)
	}
	cmd.Dir = s.base
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

func (s *repPostgres) pgctl(tb testing.TB, args ...string) {
	name := filepath.Join(s.bin, "pg_ctl")
	cmd := exec.Command(name, args...)
	if s.runAs != nil {
		cmd = exec.Command("runuser", append([]string{"-u", s.runAs.Username, "--", name}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Logf("pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (s *repPostgres) open(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sql.Open("pgx", s.url)
	if err != nil {
		tb.Fatal(err)
	}
	testwait.EventuallyNil(tb, func() error { return db.PingContext(context.Background()) }, fmt.Sprintf("PostgreSQL on port %d to answer", s.port))
	return db
}

// newDatabase creates an empty database and returns its name and URL.
func (s *repPostgres) newDatabase(tb testing.TB) (string, string) {
	tb.Helper()
	s.dbs++
	name := fmt.Sprintf("bench_%d", s.dbs)
	db := s.open(tb)
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		tb.Fatal(err)
	}
	return name, fmt.Sprintf("postgres://mutual@127.0.0.1:%d/%s?sslmode=disable", s.port, name)
}

// cpuTicks returns the user+system CPU time of a process in clock ticks
// (1/100 s), from /proc/PID/stat.
func cpuTicks(pid int) (int64, int, string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, ""
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < 0 {
		return 0, 0, ""
	}
	comm := s[open+1 : closing]
	f := strings.Fields(s[closing+1:])
	if len(f) < 13 {
		return 0, 0, ""
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st, ppid, comm
}

type repCPU struct {
	servers, postgres, self time.Duration
}

// cpuNow samples the CPU time used so far by the replicas, by every
// PostgreSQL process, and by this process (the load generator).
func (c *repCluster) cpuNow() repCPU {
	const tick = 10 * time.Millisecond
	var out repCPU
	for _, p := range c.reps {
		t, _, _ := cpuTicks(p.cmd.Process.Pid)
		out.servers += time.Duration(t) * tick
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, _, comm := cpuTicks(pid); comm == "postgres" {
			out.postgres += time.Duration(t) * tick
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return out
}

// waitSampler counts what PostgreSQL's active backends of one database wait
// on (pg_stat_activity), every 10ms until stopped.
type waitSampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples int
	counts  map[string]int
}

func startWaitSampler(tb testing.TB, pg *repPostgres, dbname string) *waitSampler {
	db := pg.open(tb)
	w := &waitSampler{stop: make(chan struct{}), done: make(chan struct{}), counts: map[string]int{}}
	go func() {
		defer close(w.done)
		defer db.Close()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			rows, err := db.Query(`SELECT state, coalesce(wait_event_type, 'CPU'), coalesce(wait_event, 'running'), count(*)
				FROM pg_stat_activity WHERE datname = $1 AND state IN ('active', 'idle in transaction') AND pid <> pg_backend_pid()
				GROUP BY 1, 2, 3`, dbname)
			if err != nil {
				continue
			}
			w.samples++
			for rows.Next() {
				var state, typ, ev string
				var n int
				if rows.Scan(&state, &typ, &ev, &n) == nil {
					if state == "idle in transaction" {
						// The transaction waits for the replica's next statement.
						typ, ev = "InTransaction", "waiting-for-replica"
					}
					w.counts[typ+":"+ev] += n
				}
			}
			rows.Close()
		}
	}()
	return w
}

// avg is the average number of backends seen in state ("Lock:advisory").
func (w *waitSampler) avg(state string) float64 {
	if w.samples == 0 {
		return 0
	}
	return float64(w.counts[state]) / float64(w.samples)
}

// end stops sampling and returns the average number of backends in a
// transaction in each state, most frequent first.
func (w *waitSampler) end() string {
	close(w.stop)
	<-w.done
	if w.samples == 0 {
		return "no samples"
	}
	type kv struct {
		k string
		v float64
	}
	var all []kv
	total := 0.0
	for k, n := range w.counts {
		v := float64(n) / float64(w.samples)
		total += v
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v })
	parts := []string{fmt.Sprintf("%.1f backends in a transaction on average", total)}
	for _, e := range all {
		if e.v >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s %.1f", e.k, e.v))
		}
	}
	return strings.Join(parts, ", ")
}

func BenchmarkReplicas(b *testing.B) {
	const clients = 24
	pg := repStartPostgres(b)
	ctx := context.Background()

	// Pre-generated CSRs: the clients' key generation is not measured.
	csrs := make([]string, 256)
	for i := range csrs {
		csrs[i] = testca.CSR(b, nil)
	}

	for _, n := range []int{1, 2, 3} {
		// A CA of its own per database: a CA directory remembers its log
		// and refuses a store that lost it.
		caDir, pass := repInitCA(b)
		dbname, dbURL := pg.newDatabase(b)
		c := newRepCluster(b, caDir, pass, dbURL, n)
		// Each client enrolls once, then renews over one keep-alive mTLS
		// connection to its replica (the others listed after it).
		var cls []*client.Client
		for k := range clients {
			order := []int{}
			for j := range n {
				order = append(order, (k+j)%n)
			}
			admin := c.adminClient(b, order)
			tok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: fmt.Sprintf("spiffe://%s/bench/c%d", repTD, k)})
			if err != nil {
				b.Fatal(err)
			}
			admin.CloseIdleConnections()
			l := &repLoad{c: c}
			key, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
			if err != nil {
				b.Fatal(err)
			}
			id, err := l.enrollVia(ctx, c.urlsIn(order), tok.Token, key)
			if err != nil {
				b.Fatal(err)
			}
			tc := id.TLSCertificate()
			cl, err := client.New(c.urlsIn(order), c.roots, &tc)
			if err != nil {
				b.Fatal(err)
			}
			cls = append(cls, cl)
		}
		var waits string
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			ws := startWaitSampler(b, pg, dbname)
			cpu0 := c.cpuNow()
			b.ResetTimer()
			start := time.Now()
			for k, cl := range cls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						resp, err := cl.Renew(ctx, api.RenewRequest{CSR: csrs[(int(i)+k)%len(csrs)]})
						if err != nil {
							b.Error(err)
							return
						}
						if resp.Serial == "" {
							b.Error("renewal answered no serial")
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			cpu1 := c.cpuNow()
			waits = ws.end()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "certs/s")
			b.ReportMetric((cpu1.servers-cpu0.servers).Seconds()/elapsed.Seconds(), "server-cores")
			b.ReportMetric((cpu1.postgres-cpu0.postgres).Seconds()/elapsed.Seconds(), "pg-cores")
			b.ReportMetric((cpu1.self-cpu0.self).Seconds()/elapsed.Seconds(), "loadgen-cores")
			b.ReportMetric(ws.avg("Lock:advisory"), "log-lock-waiters")
		})
		b.Logf("%d replica(s), PostgreSQL backends: %s", n, waits)
		for _, cl := range cls {
			cl.CloseIdleConnections()
		}
		for i := range c.reps {
			c.kill(b, i)
		}
	}
}
