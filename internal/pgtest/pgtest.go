// Package pgtest starts a real, throwaway PostgreSQL server for tests: initdb
// and pg_ctl in a temporary directory, listening on 127.0.0.1 only.
//
// The binaries are found on PATH or under /usr/lib/postgresql/*/bin. When they
// are missing the test is skipped with a message, except under CI (the CI
// environment variable set), where a missing PostgreSQL is a failure: .ci/run
// installs it. As root, the server runs as the "postgres" user, since
// PostgreSQL refuses to run as root.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/mutual-tls/mutual/internal/testport"
)

// Server is a running PostgreSQL server.
type Server struct {
	// URL connects to the "postgres" database as the superuser "mutual".
	URL  string
	Port int

	bin   string
	base  string
	data  string
	runAs *user.User
	dbs   atomic.Int64
}

// Bin returns the directory holding initdb and pg_ctl, or "".
func Bin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := exec.LookPath("pg_ctl"); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start runs initdb and starts a server; it is stopped when the test ends.
// Durability is relaxed (fsync off) since the data is thrown away.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Bin()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PostgreSQL server binaries (initdb, pg_ctl) not found; .ci/run installs them (apt-get install postgresql)")
		}
		t.Skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql to run this test (CI does)")
	}
	s := &Server{bin: bin}
	base, err := os.MkdirTemp("", "mutual-pgtest-*")
	if err != nil {
		t.Fatal(err)
	}
	s.base = base
	s.data = filepath.Join(base, "data")
	t.Cleanup(func() {
		s.Stop(t)
		os.RemoveAll(base)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs an unprivileged user: %v (create the postgres user, as the postgresql package does)", err)
		}
		s.runAs = u
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chmod(base, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s.run(t, filepath.Join(bin, "initdb"), "-D", s.data, "-U", "mutual", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
	s.Port = testport.Port(t)
	s.URL = fmt.Sprintf("postgres://mutual@127.0.0.1:%d/postgres?sslmode=disable", s.Port)
	s.Start(t)
	return s
}

func (s *Server) run(t testing.TB, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if s.runAs != nil {
		cmd = exec.Command("runuser", append([]string{"-u", s.runAs.Username, "--", name}, args...)...)
	}
	cmd.Dir = s.base
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// Start (re)starts the server on its port and waits until it accepts
// connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", s.Port, s.data)
	s.run(t, filepath.Join(s.bin, "pg_ctl"), "-D", s.data, "-l", filepath.Join(s.base, "server.log"), "-o", opts, "-w", "-t", "60", "start")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for {
		if err := db.PingContext(ctx); err == nil {
			return
		} else if ctx.Err() != nil {
			t.Fatalf("PostgreSQL did not accept connections on port %d: %v", s.Port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server (fast shutdown: sessions are cut). It may be
// started again with Start.
func (s *Server) Stop(t testing.TB) {
	if _, err := os.Stat(filepath.Join(s.data, "postmaster.pid")); err != nil {
		return
	}
	cmd := exec.Command(filepath.Join(s.bin, "pg_ctl"), "-D", s.data, "-m", "fast", "-w", "stop")
	if s.runAs != nil {
		cmd = exec.Command("runuser", "-u", s.runAs.Username, "--", filepath.Join(s.bin, "pg_ctl"), "-D", s.data, "-m", "fast", "-w", "stop")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Logf("pg_ctl stop: %v\n%s", err, out)
	}
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	db, err := sql.Open("pgx", s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return fmt.Sprintf("postgres://mutual@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}

// LogFile is the server's log (where PostgreSQL reports deadlocks).
func (s *Server) LogFile() string { return filepath.Join(s.base, "server.log") }
