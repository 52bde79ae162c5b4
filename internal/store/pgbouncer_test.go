package store_test

import (
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
// connections, as behind a real pooler.
func startPgBouncer(t *testing.T, pg *pgtest.Server, db, mode string) string {
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
