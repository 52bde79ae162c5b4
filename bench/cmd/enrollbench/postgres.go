package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// postgres is a throwaway PostgreSQL server with full durability (fsync,
// synchronous_commit and full_page_writes on: the defaults).
type postgres struct {
	bin, data string
	port      int
	runAs     *user.User
	pid       int
	dbs       int
}

// pgBin finds initdb and pg_ctl: on PATH, or Debian's
// /usr/lib/postgresql/VERSION/bin.
func pgBin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// startPostgres starts the server, with pg_stat_statements loaded when
// pgstat.
func startPostgres(ctx context.Context, work string, pgstat bool) (*postgres, error) {
	bin := pgBin()
	if bin == "" {
		return nil, fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql, or -replicas ''")
	}
	base := filepath.Join(work, "postgres")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	p := &postgres{bin: bin, data: filepath.Join(base, "data")}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres user: %w", err)
		}
		p.runAs = u
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(base, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := p.cmd(ctx, "initdb", "-D", p.data, "-U", "mutual", "--auth=trust", "-E", "UTF8", "--locale=C").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p.port, _ = strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=200", p.port, p.data)
	if pgstat {
		opts += pgStatOptions
	}
	if out, err := p.cmd(ctx, "pg_ctl", "-D", p.data, "-l", filepath.Join(base, "server.log"), "-o", opts, "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_ctl start: %w: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(p.data, "postmaster.pid"))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.pid, _ = strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return p, nil
}

func (p *postgres) cmd(ctx context.Context, tool string, args ...string) *exec.Cmd {
	path := filepath.Join(p.bin, tool)
	if p.runAs != nil {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", p.runAs.Username, "--", path}, args...)...)
	}
	return exec.CommandContext(ctx, path, args...)
}

// newDatabase creates an empty database and returns its URL.
func (p *postgres) newDatabase(ctx context.Context) (string, error) {
	db, err := sql.Open("pgx", fmt.Sprintf("postgres://mutual@127.0.0.1:%d/postgres?sslmode=disable", p.port))
	if err != nil {
		return "", err
	}
	defer db.Close()
	p.dbs++
	name := fmt.Sprintf("bench_%d", p.dbs)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	// Full durability, checked rather than assumed.
	for _, q := range []string{"SHOW fsync", "SHOW synchronous_commit"} {
		var v string
		if err := db.QueryRowContext(ctx, q).Scan(&v); err != nil || v != "on" {
			return "", fmt.Errorf("%s: %q (%v), want on", q, v, err)
		}
	}
	return fmt.Sprintf("postgres://mutual@127.0.0.1:%d/%s?sslmode=disable", p.port, name), nil
}

func (p *postgres) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p.cmd(ctx, "pg_ctl", "-D", p.data, "-m", "fast", "-w", "stop").Run()
}
