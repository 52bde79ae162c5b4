package main

// Faults of the store that must cost a bounded stall or stop the CA
// loudly (issue 13): a replica frozen while it holds the issuance log's
// lock, one token raced over three replicas, a SQLite store deleted,
// emptied, replaced or damaged. Real processes, a real PostgreSQL, real
// signals; waits are bounded by safetyNet only.

import (
	"context"
	"crypto"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/translog"
)

// logLockHolder names the application (mutual-replica-N) whose session
// holds the issuance log's advisory lock (key 7105294005: classid 1, objid
// 2810326709 in pg_locks), or "".
func logLockHolder(tb testing.TB, db *sql.DB) string {
	tb.Helper()
	var name string
	err := db.QueryRow(`SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1 AND l.objid = 2810326709`).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return ""
	}
	if err != nil {
		tb.Fatalf("pg_locks: %v", err)
	}
	return name
}

// Advisory locks in pg_locks (classid 1, objid the key's low 32 bits): the
// issuance log's (7105294005), and the revocation lock every issuing
// transaction shares (7105294004).
const (
	logLockObjID        = 2810326709
	revocationLockObjID = 2810326708
)

// heldByStoppedClient reports whether the advisory lock objid stays with
// the session named app once its client is stopped: the session sits idle
// in its transaction, waiting for a client that sends nothing (a COMMIT sent
// just before the stop would have been read at once and released the
// lock). It watches the server for up to two seconds.
func heldByStoppedClient(tb testing.TB, db *sql.DB, app string, objid int64) bool {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		var idle bool
		err := db.QueryRow(`SELECT a.state = 'idle in transaction' AND now() - a.state_change > interval '100 milliseconds'
			FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1 AND l.objid = $2 AND a.application_name = $1
			LIMIT 1`, app, objid).Scan(&idle)
		if errors.Is(err, sql.ErrNoRows) {
			return false
		}
		if err != nil {
			tb.Fatalf("pg_locks: %v", err)
		}
		if idle {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (c *repCluster) signal(tb testing.TB, i int, sig syscall.Signal) {
	tb.Helper()
	if err := c.reps[i].cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("replica %d: %v: %v", i, sig, err)
	}
}

// TestReplicasFrozenLogLockHolder freezes a replica (SIGSTOP) in the middle
// of an issuing transaction, under load: it never holds the issuance log's
// lock there (the append and the commit are one round trip), so the other
// two go on issuing. Then a session that does stop holding the log's lock
// (the test's own, as a replica behind a pooler could): the replicas say on
// /readyz that they cannot issue while it is held, go on once PostgreSQL
// ends its transaction, and after SIGCONT everything received is stored and
// logged once.
func TestReplicasFrozenLogLockHolder(t *testing.T) {
	pg := pgtest.Start(t)
	caDir, pass := repInitCA(t)
	dbURL := pg.NewDatabase(t)
	c := newRepCluster(t, caDir, pass, dbURL, 3)
	first := c.checkpoint(t, 1, 1)
	ctx := context.Background()
	watch, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()

	// Replica 0 renews in a loop (renewals only, so that an answer lost
	// while it is frozen spends no token); replicas 1 and 2 carry the
	// accounted load.
	admin := c.adminClient(t, []int{1, 2})
	defer admin.CloseIdleConnections()
	stopR0 := make(chan struct{})
	var r0wg sync.WaitGroup
	var r0issued atomic.Int64
	for w := range 3 {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: fmt.Sprintf("spiffe://%s/ns/frozen/r0-%d", repTD, w)})
		if err != nil {
			t.Fatal(err)
		}
		enr, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
		if err != nil {
			t.Fatal(err)
		}
		r0wg.Add(1)
		go func(cur *identity.Identity) {
			defer r0wg.Done()
			for {
				select {
				case <-stopR0:
					return
				default:
				}
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				next, err := client.RenewIdentity(rctx, cur, c.urlsIn([]int{0}), "", 0)
				cancel()
				if err == nil {
					cur = next
					r0issued.Add(1)
				}
			}
		}(enr.Identity)
	}
	l := newRepLoad(t, c)
	l.setPhase("all three up")
	for w, order := range [][]int{{1, 2}, {2, 1}, {1, 2}, {2, 1}} {
		l.worker(w, order)
	}
	l.waitIssued(t, 20, "before the freeze")

	// SIGSTOP replica 0 until it is caught inside an issuing transaction.
	testwait.Eventually(t, func() bool {
		c.signal(t, 0, syscall.SIGSTOP)
		if heldByStoppedClient(t, watch, "mutual-replica-0", revocationLockObjID) {
			return true
		}
		c.signal(t, 0, syscall.SIGCONT) // it was between transactions
		return false
	}, "a SIGSTOP to catch replica 0 inside an issuing transaction")
	close(stopR0)
	frozenAt := l.issued.Load()
	l.setPhase("replica 0 frozen in an issuing transaction")
	t.Logf("replica 0 frozen (SIGSTOP) in an issuing transaction after %d certificates", frozenAt)
	if heldByStoppedClient(t, watch, "mutual-replica-0", logLockObjID) {
		t.Errorf("frozen replica 0 holds the issuance log's lock")
	}
	l.waitIssued(t, 30, "replicas 1 and 2 with replica 0 frozen in a transaction")

	// A session stuck holding the log's lock: a bounded stall.
	stuck, err := watch.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	for _, q := range []string{"SET application_name = 'stuck-session'", "SET idle_in_transaction_session_timeout = 5000",
		"BEGIN", "SELECT pg_advisory_xact_lock(7105294005)"} {
		if _, err := stuck.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	stuckAt := l.issued.Load()
	l.setPhase("a session stuck holding the log lock")
	// While it holds the lock, a replica that cannot take it says so on
	// /readyz (once its batches have waited a moment).
	testwait.Eventually(t, func() bool {
		st, _, body := c.get(t, 1, "/readyz", nil)
		switch {
		case st == http.StatusServiceUnavailable:
			t.Logf("replica 1 while a stuck session holds the lock: /readyz 503: %s", strings.Join(strings.Fields(string(body)), " "))
			return true
		case logLockHolder(t, watch) != "stuck-session":
			t.Fatalf("replica 1 answered /readyz %d for as long as the stuck session held the issuance log's lock: %s", st, body)
		}
		return false
	}, "replica 1 to say on /readyz that it cannot take the log's lock")

	// The others go on: PostgreSQL ends the stuck session's transaction
	// and the lock is free again.
	l.waitIssued(t, 30, "replicas 1 and 2 after PostgreSQL ended the stuck session")
	during := l.issued.Load() - frozenAt
	if logLockHolder(t, watch) == "stuck-session" {
		t.Errorf("the stuck session still holds the issuance log's lock")
	}
	t.Logf("%d certificates issued by replicas 1 and 2 while replica 0 was frozen, %d after the stuck session's lock", during, l.issued.Load()-stuckAt)

	c.signal(t, 0, syscall.SIGCONT)
	r0wg.Wait()
	c.waitReady(t, 0)
	l.setPhase("replica 0 resumed (SIGCONT)")
	l.waitIssued(t, 20, "after SIGCONT")
	l.finish(t)
	if during <= 0 {
		t.Errorf("no certificate was issued while replica 0 was frozen")
	}
	c.audit(t, l, first, []int{0, 1, 2})
	c.stopAll(t)
}

// TestReplicasTokenRace presents one join token at three replicas at the
// same instant, round after round, while unrelated renewals keep every
// replica's batches full: exactly one enrollment per token succeeds, the
// others are told token_used, every renewal succeeds at its first attempt
// (no batch aborted as a deadlock victim), and PostgreSQL logs no deadlock.
func TestReplicasTokenRace(t *testing.T) {
	pg := pgtest.Start(t)
	caDir, pass := repInitCA(t)
	dbURL := pg.NewDatabase(t)
	c := newRepCluster(t, caDir, pass, dbURL, 3)
	first := c.checkpoint(t, 0, 1)
	ctx := context.Background()
	admin := c.adminClient(t, []int{0, 1, 2})
	defer admin.CloseIdleConnections()

	// once answers the first reply as it is: no failover, no retry.
	once := func(urls []string, cur *identity.Identity) *client.Client {
		var cl *client.Client
		var err error
		if cur != nil {
			tc := cur.TLSCertificate()
			cl, err = client.New(urls, c.roots, &tc)
		} else {
			cl, err = client.New(urls, c.roots, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		cl.Retries = -1
		return cl
	}
	newCSR := func() (crypto.Signer, string) {
		key := testca.NewKey(t)
		return key, testca.CSR(t, key)
	}

	// Unrelated renewals, four per replica at any time, so that the race's
	// enrollments land in batches beside them.
	var renewed, renewFailed atomic.Int64
	var failMu sync.Mutex
	var renewErrs []string
	stop := make(chan struct{})
	var bg sync.WaitGroup
	for k := range 12 {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: fmt.Sprintf("spiffe://%s/ns/race/renew%d", repTD, k)})
		if err != nil {
			t.Fatal(err)
		}
		enr, err := client.RequestIdentity(ctx, tok.Token, pki.KeyECDSAP256, 0)
		if err != nil {
			t.Fatal(err)
		}
		bg.Add(1)
		go func(cur *identity.Identity) {
			defer bg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				key, pem := newCSR()
				cl := once(c.urlsIn([]int{k % 3}), cur)
				resp, err := cl.Renew(ctx, api.RenewRequest{CSR: pem})
				cl.CloseIdleConnections()
				if err != nil {
					renewFailed.Add(1)
					failMu.Lock()
					if len(renewErrs) < 10 {
						renewErrs = append(renewErrs, fmt.Sprintf("replica %d: %v", k%3, err))
					}
					failMu.Unlock()
					continue
				}
				chain, err := pki.ParseCertificates([]byte(resp.ChainPEM))
				if err != nil {
					t.Error(err)
					return
				}
				cur = &identity.Identity{ID: cur.ID, Chain: chain, Key: key, Roots: cur.Roots}
				renewed.Add(1)
			}
		}(enr.Identity)
	}

	const rounds = 30
	enrolled, refused := 0, 0
	for round := range rounds {
		tok, err := admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: fmt.Sprintf("spiffe://%s/ns/race/t%d", repTD, round)})
		if err != nil {
			t.Fatal(err)
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var wins []string
		for i := range 3 {
			_, pem := newCSR()
			cl := once(c.urlsIn([]int{i}), nil)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer cl.CloseIdleConnections()
				<-start
				resp, err := cl.Enroll(ctx, api.EnrollRequest{Token: tok.Token, CSR: pem})
				mu.Lock()
				defer mu.Unlock()
				var ae *client.APIError
				switch {
				case err == nil:
					wins = append(wins, resp.Serial)
				case errors.As(err, &ae) && ae.Code == "token_used":
					refused++
				default:
					t.Errorf("round %d: enrollment at replica %d: %v (want success or token_used)", round, i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(wins) != 1 {
			t.Errorf("round %d: the token yielded %d certificates (%v), want exactly 1", round, len(wins), wins)
		}
		enrolled += len(wins)
	}
	close(stop)
	bg.Wait()
	if n := renewFailed.Load(); n > 0 {
		t.Errorf("%d unrelated renewals failed beside the race (a batch aborted): %v", n, renewErrs)
	}
	log, err := os.ReadFile(pg.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "deadlock detected"); n > 0 {
		t.Errorf("PostgreSQL detected %d deadlocks:\n%s", n, grepLines(string(log), "deadlock"))
	}
	t.Logf("%d rounds: %d enrollments won, %d refused token_used; %d unrelated renewals beside them succeeded at their first attempt, %d failed",
		rounds, enrolled, refused, renewed.Load(), renewFailed.Load())
	c.audit(t, nil, first, []int{0, 1, 2})
	c.stopAll(t)
}

func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// sqliteCA is one CA on its SQLite store, started and stopped as a real
// `mutual server` process.
type sqliteCA struct {
	t        *testing.T
	dir      string
	passFile string
	listen   string
	metrics  string
	p        *proc
}

func newSQLiteCA(t *testing.T) *sqliteCA {
	dir, pass := repInitCA(t)
	return &sqliteCA{t: t, dir: dir, passFile: pass, listen: freeAddr(t), metrics: freeAddr(t)}
}

func (s *sqliteCA) db() string { return filepath.Join(s.dir, pki.DatabaseFile) }

func (s *sqliteCA) cmd() *exec.Cmd {
	cmd := exec.Command(mutualBin, "server", "--dir", s.dir, "--passphrase-file", s.passFile, "--listen", s.listen, "--metrics", s.metrics)
	cmd.Env = cmdEnv()
	return cmd
}

// start starts the server and waits until /readyz answers 200.
func (s *sqliteCA) start() {
	t := s.t
	t.Helper()
	s.p = startProc(t, s.cmd())
	c := &repCluster{urls: []string{"https://" + s.listen}, reps: []*proc{s.p}}
	admin, err := identity.Load(filepath.Join(s.dir, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	c.roots = admin.Roots
	c.waitReady(t, 0)
}

// refused runs the server and expects it to exit non-zero at once, saying
// what must be in its error.
func (s *sqliteCA) refused(what string, want ...string) string {
	t := s.t
	t.Helper()
	p := startProc(t, s.cmd())
	select {
	case <-p.done:
	case <-time.After(safetyNet):
		t.Fatalf("%s: the server is still running after %s; it must refuse to start", what, safetyNet)
	}
	if p.err == nil {
		t.Fatalf("%s: the server exited 0; it must refuse to start", what)
	}
	msg := p.stderr.String()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: the server's error does not say %q:\n%s", what, w, msg)
		}
	}
	if strings.Contains(strings.ToLower(msg), "retry") {
		t.Errorf("%s: the server's error says to retry; it must say to restore:\n%s", what, msg)
	}
	t.Logf("%s: the server refuses to start: %s", what, strings.TrimSpace(msg))
	return msg
}

func (s *sqliteCA) client(t *testing.T) *client.Client {
	admin, err := identity.Load(filepath.Join(s.dir, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	tc := admin.TLSCertificate()
	cl, err := client.New([]string{"https://" + s.listen}, admin.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// issue enrolls n identities through the running server.
func (s *sqliteCA) issue(t *testing.T, n int) {
	t.Helper()
	cl := s.client(t)
	defer cl.CloseIdleConnections()
	for k := range n {
		tok, err := cl.CreateToken(context.Background(), api.TokenRequest{SPIFFEID: fmt.Sprintf("spiffe://%s/ns/sqlite/w%d", repTD, k)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.RequestIdentity(context.Background(), tok.Token, pki.KeyECDSAP256, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// waitCheckpointFile waits until the CA directory records a checkpoint of
// at least size entries.
func (s *sqliteCA) waitCheckpointFile(size int64) {
	t := s.t
	t.Helper()
	path := filepath.Join(s.dir, translog.CheckpointFile)
	testwait.Eventually(t, func() bool {
		var w struct {
			Size int64 `json:"size"`
		}
		b, err := os.ReadFile(path)
		return err == nil && json.Unmarshal(b, &w) == nil && w.Size >= size
	}, fmt.Sprintf("a checkpoint of %d entries in %s", size, path))
}

func (s *sqliteCA) stop() {
	s.t.Helper()
	repTerminate(s.t, "the server", s.p)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func removeStore(t *testing.T, path string) {
	t.Helper()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// TestServerRefusesLostSQLiteStore: a CA that has issued must not start on
// a missing, empty or foreign SQLite file (that would forget every
// certificate, token and revocation and fork its log under the same key);
// it starts again once the backup is back. A first start still creates it.
func TestServerRefusesLostSQLiteStore(t *testing.T) {
	s := newSQLiteCA(t)
	s.start() // first start: creates mutual.db
	s.issue(t, 5)
	s.waitCheckpointFile(5)
	s.stop()
	backup := filepath.Join(t.TempDir(), "backup.db")
	copyFile(t, s.db(), backup)

	removeStore(t, s.db())
	s.refused("store deleted", "does not exist", "restore")
	if _, err := os.Stat(s.db()); err == nil {
		t.Errorf("refusing to start, the server still created a fresh %s", s.db())
	}

	if err := os.WriteFile(s.db(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s.refused("store emptied", "is empty", "restore")

	// A store of another CA (here: a fresh one) holds another log.
	other := newSQLiteCA(t)
	other.start()
	other.stop()
	copyFile(t, other.db(), s.db())
	s.refused("another CA's store", "restore", "fork")

	copyFile(t, backup, s.db())
	s.start()
	s.issue(t, 1)
	s.stop()
}

// TestServerNoticesSQLiteStoreDeletedWhileRunning deletes the store under
// a running CA: it must go unready saying so and refuse to issue (the
// writes would vanish), rather than answer 200 and lose them.
func TestServerNoticesSQLiteStoreDeletedWhileRunning(t *testing.T) {
	s := newSQLiteCA(t)
	s.start()
	s.issue(t, 2)
	removeStore(t, s.db())

	c := &repCluster{urls: []string{"https://" + s.listen}}
	admin, err := identity.Load(filepath.Join(s.dir, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	c.roots = admin.Roots
	for _, path := range []string{"/readyz", "/healthz"} {
		st, _, body := c.get(t, 0, path, nil)
		if st != http.StatusServiceUnavailable || !strings.Contains(string(body), "deleted") || !strings.Contains(string(body), "restore") {
			t.Errorf("GET %s with the store deleted: HTTP %d: %s; want 503 saying it was deleted and to restore", path, st, body)
		}
	}
	cl := s.client(t)
	defer cl.CloseIdleConnections()
	tok, err := cl.CreateToken(context.Background(), api.TokenRequest{SPIFFEID: "spiffe://" + repTD + "/ns/sqlite/after"})
	if err == nil {
		_, err = client.RequestIdentity(context.Background(), tok.Token, pki.KeyECDSAP256, 0)
	}
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != "store_damaged" {
		t.Errorf("issuing with the store deleted: %v; want store_damaged", err)
	}
	testwait.Eventually(t, func() bool { return s.p.stderr.Contains("restore the store from backup") },
		"the server's log to say the store is damaged")
	s.stop()
}

// TestServerRefusesDamagedSQLiteStore damages the store's pages: the CA
// refuses to start with "restore from backup", never "retry".
func TestServerRefusesDamagedSQLiteStore(t *testing.T) {
	s := newSQLiteCA(t)
	s.start()
	s.issue(t, 20)
	s.stop()
	backup := filepath.Join(t.TempDir(), "backup.db")
	copyFile(t, s.db(), backup)

	b, err := os.ReadFile(s.db())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8*4096 {
		t.Fatalf("store of %d bytes: too small to damage its pages", len(b))
	}
	// Garbage over the pages after the first: b-tree pages the integrity
	// check reads.
	for i := 4096; i < len(b); i++ {
		b[i] = byte(i*7 + 13)
	}
	if err := os.WriteFile(s.db(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.refused("damaged pages", "damaged", "restore")

	// Not a database at all.
	for i := range b {
		b[i] = byte(i*31 + 5)
	}
	if err := os.WriteFile(s.db(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.refused("not a database", "damaged", "restore")

	copyFile(t, backup, s.db())
	s.start()
	s.stop()
}

// TestCertListPagesThroughEverything: `cert list --json` lists every
// certificate, however many pages the API needs, each once; and the
// server's metrics listener carries the Go runtime and process metrics.
func TestCertListPagesThroughEverything(t *testing.T) {
	s := newSQLiteCA(t)
	s.start()
	s.issue(t, 7) // and the two `ca init` made: 9
	var all api.CertificateList
	mustMutualJSON(t, &all, "cert", "list", "--server", "https://"+s.listen, "--identity-dir", filepath.Join(s.dir, "admin"), "--json", "--page-size", "2")
	seen := map[string]bool{}
	for _, ci := range all.Certificates {
		if seen[ci.Serial] {
			t.Errorf("serial %s listed twice", ci.Serial)
		}
		seen[ci.Serial] = true
	}
	if len(seen) != 9 {
		t.Errorf("cert list --page-size 2 listed %d certificates, want all 9", len(seen))
	}
	t.Logf("cert list --page-size 2: %d certificates over 5 pages", len(seen))

	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"go_goroutines ", "go_memstats_heap_alloc_bytes ", "process_resident_memory_bytes ", "process_open_fds ", "mutual_ca_store_up "} {
		if !strings.Contains(string(body), "\n"+m) {
			t.Errorf("GET /metrics has no %s", strings.TrimSpace(m))
		}
	}
	s.stop()
}
