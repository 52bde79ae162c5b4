package store_test

import (
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testport"
)

// startPgBouncer runs Debian's pgbouncer with pool_mode = mode in front of
// pg and returns the URL of database db through it. Its pool is smaller
// than the store's, so transactions of one store take turns on few server
// connections, as behind a real pooler. Each of extra is one more line of
// its [pgbouncer] section.
func startPgBouncer(t *testing.T, pg *pgtest.Server, db, mode string, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/pgbouncer"); err2 != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("pgbouncer is missing on CI: .ci/run must install it")
			}
			t.Skip("pgbouncer is not installed (apt-get install pgbouncer)")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	// Not t.TempDir: its parent is private to root, and pgbouncer may run
	// as another user.
	dir, err := os.MkdirTemp("", "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	port := testport.Port(t)
	ini := fmt.Sprintf(`[databases]
* = host=127.0.0.1 port=%d
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/userlist.txt
pool_mode = %s
default_pool_size = 4
max_client_conn = 500
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
`, pg.Port, port, dir, mode, dir, dir)
	for _, line := range extra {
		ini += line + "\n"
	}
	for name, body := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": `"mutual" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 { // pgbouncer refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, pgbouncer needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for !listening(addr) {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer exited: %s%s", out, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("pgbouncer never listened")
		}
	}
	return fmt.Sprintf("postgres://mutual@%s/%s?sslmode=disable", addr, db)
}

// TestPgBouncerTransactionMode: a CA store behind PgBouncer in transaction
// pooling mode opens, enrolls, renews and revokes under concurrency with
// zero errors.
func TestPgBouncerTransactionMode(t *testing.T) {
	pg := pgtest.Start(t)
	direct := pg.NewDatabase(t)
	name := direct[strings.LastIndex(direct, "/")+1 : strings.Index(direct, "?")]
	url := startPgBouncer(t, pg, name, "transaction")

	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("open through pgbouncer: %v", err)
	}
	defer db.Close()
	if err := db.Health(ctx); err != nil {
		t.Errorf("health through pgbouncer: %v", err)
	}
	now := time.Now().Truncate(time.Microsecond)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("%016x", 0xb0000+i)
			if err := db.CreateToken(ctx, token(id, now)); err != nil {
				errs <- fmt.Errorf("token %d: %w", i, err)
				return
			}
			enrolled := cert(fmt.Sprintf("e%04x", i), now)
			enrolled.LogEntry = []byte(enrolled.Serial)
			if err := db.RecordIssuance(ctx, enrolled, id, now); err != nil {
				errs <- fmt.Errorf("enroll %d: %w", i, err)
				return
			}
			renewed := cert(fmt.Sprintf("r%04x", i), now)
			renewed.RenewedFrom = enrolled.Serial
			renewed.LogEntry = []byte(renewed.Serial)
			if err := db.RecordIssuance(ctx, renewed, "", now); err != nil {
				errs <- fmt.Errorf("renew %d: %w", i, err)
				return
			}
			if got, err := db.GetCertificate(ctx, renewed.Serial); err != nil || got.RenewedFrom != enrolled.Serial {
				errs <- fmt.Errorf("read %d: %+v, %w", i, got, err)
				return
			}
			if i%2 == 0 {
				if _, err := db.RevokeSerial(ctx, renewed.Serial, 1, now); err != nil {
					errs <- fmt.Errorf("revoke %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		t.Fatalf("%d of %d clients failed through pgbouncer:\n%v", len(all), n, err)
	}
	size, err := db.LogSize(ctx)
	if err != nil || size != 2*n {
		t.Errorf("log size %d (%v), want %d", size, err, 2*n)
	}
	revoked, err := db.RevokedUnexpired(ctx, now)
	if err != nil || len(revoked) != n/2 {
		t.Errorf("%d revoked (%v), want %d", len(revoked), err, n/2)
	}
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestPgBouncerStatementModeIsAConfigurationError: a pooler that cannot
// carry transactions is reported as the operator's configuration to fix,
// not as a store that is down.
func TestPgBouncerStatementModeIsAConfigurationError(t *testing.T) {
	pg := pgtest.Start(t)
	direct := pg.NewDatabase(t)
	name := direct[strings.LastIndex(direct, "/")+1 : strings.Index(direct, "?")]
	db, err := store.Open(ctx, startPgBouncer(t, pg, name, "statement"))
	if err == nil {
		db.Close()
		t.Fatal("the store opened through a statement-mode pooler")
	}
	if !strings.Contains(err.Error(), "configuration") || !strings.Contains(err.Error(), "pool_mode = transaction") {
		t.Errorf("error %q: want it to say the pooler's configuration is wrong and how to fix it", err)
	}
}

// TestPgBouncerIgnoringStartupParameters: a PgBouncer that ignores the
// store's startup parameters (ignore_startup_parameters) rather than
// refusing them is a transaction pooler all the same: the migrations, a
// no-transaction one among them, leave no advisory lock held on any of
// its server connections (a session lock taken on one server connection
// and released on another would stay, and stop every later start), and
// the store works through it. Its server connections are used in turn
// (server_round_robin), as a busy pooler's would be.
func TestPgBouncerIgnoringStartupParameters(t *testing.T) {
	pg := pgtest.Start(t)
	// The URL as given (statements prepared by pgx), and one that asks
	// for none (with which the pooler's server connections are the only
	// difference from a direct connection).
	for _, query := range []string{"", "&default_query_exec_mode=simple_protocol"} {
		t.Run(query, func(t *testing.T) {
			direct := pg.NewDatabase(t)
			name := direct[strings.LastIndex(direct, "/")+1 : strings.Index(direct, "?")]
			url := startPgBouncer(t, pg, name, "transaction",
				"ignore_startup_parameters = lock_timeout, idle_in_transaction_session_timeout, statement_timeout",
				"server_round_robin = 1")
			migrateThroughPooler(t, direct, url, url+query)
		})
	}
}

// migrateThroughPooler opens the store at storeURL twice, as two replicas
// starting one after the other, with server connections of the pooler at
// url idle (to be used in turn); after each, no advisory lock is left on
// the server at direct.
func migrateThroughPooler(t *testing.T, direct, url, storeURL string) {
	t.Helper()
	// Several server connections, idle in the pooler.
	warm, err := sql.Open("pgx", url+"&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := warm.ExecContext(ctx, "SELECT pg_sleep(0.2)"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	check, err := sql.Open("pgx", direct)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	for replica := range 2 {
		db, err := store.Open(ctx, storeURL)
		if err != nil {
			t.Fatalf("replica %d: open through pgbouncer: %v", replica, err)
		}
		now := time.Now().Truncate(time.Microsecond)
		id := fmt.Sprintf("%016x", 0xc0000+replica)
		if err := db.CreateToken(ctx, token(id, now)); err != nil {
			t.Fatalf("replica %d: token: %v", replica, err)
		}
		if err := db.RecordIssuance(ctx, cert(fmt.Sprintf("p%04x", replica), now), id, now); err != nil {
			t.Fatalf("replica %d: enroll: %v", replica, err)
		}
		db.Close()
		var held []string
		rows, err := check.QueryContext(ctx, "SELECT pid::text || ' ' || objid::text FROM pg_locks WHERE locktype = 'advisory'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			held = append(held, s)
		}
		rows.Close()
		if len(held) != 0 {
			t.Fatalf("replica %d: advisory locks still held on the server after the store closed: %v", replica, held)
		}
	}
}
