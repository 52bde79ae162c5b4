package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/mutual-tls/mutual/internal/procfs"
)

// pgStats, with -pgstat, says where a PostgreSQL run's database time
// went: the statements (pg_stat_statements, nested ones included, so a
// function's statements are listed under it) and the CPU of the
// server's processes by kind (each replica's connections, the WAL writer,
// autovacuum...).
type pgStats struct {
	db   *sql.DB
	root int
	cpu0 map[string]time.Duration
}

// pgStatOptions are the server options -pgstat needs.
const pgStatOptions = " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c track_functions=pl"

// startPGStats installs pg_stat_statements in the database at dbURL and
// starts counting from zero.
func startPGStats(ctx context.Context, dbURL string, root int) (*pgStats, error) {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return nil, err
	}
	for _, q := range []string{"CREATE EXTENSION IF NOT EXISTS pg_stat_statements", "SELECT pg_stat_statements_reset()", "SELECT pg_stat_reset()", "SELECT pg_stat_reset_shared('wal')"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			db.Close()
			return nil, fmt.Errorf("-pgstat: %s: %w", q, err)
		}
	}
	return &pgStats{db: db, root: root, cpu0: pgCPUByKind(root)}, nil
}

// backendKind names a PostgreSQL process by its title, less what changes
// from one moment to the next ("postgres: mutual bench_1 127.0.0.1(5432)
// idle" is a connection of bench_1's user).
var backendKind = regexp.MustCompile(`\s(\d+\.\d+\.\d+\.\d+\(\d+\)|\[local\]).*$`)

// pgCPUByKind is the CPU time so far of root's children by kind; for a
// client connection, the application_name the replica set.
func pgCPUByKind(root int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, pid := range procfs.Children(root) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		title := strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
		kind := backendKind.ReplaceAllString(title, " (connection)")
		out[kind] += procfs.CPUTime(pid)
	}
	return out
}

// report prints the statements that took most of the database's time and
// the CPU by process kind, per issuance, for n issuances.
func (s *pgStats) report(ctx context.Context, w io.Writer, n int) error {
	defer s.db.Close()
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)/float64(n))
	}
	cpu1 := pgCPUByKind(s.root)
	var kinds []string
	for k := range cpu1 {
		if cpu1[k]-s.cpu0[k] > 0 {
			kinds = append(kinds, k)
		}
	}
	sort.Slice(kinds, func(i, j int) bool { return cpu1[kinds[i]]-s.cpu0[kinds[i]] > cpu1[kinds[j]]-s.cpu0[kinds[j]] })
	fmt.Fprintf(w, "  PostgreSQL CPU per issuance by process (live processes only):\n")
	for _, k := range kinds {
		fmt.Fprintf(w, "    %10s  %s\n", per(cpu1[k]-s.cpu0[k]), k)
	}
	var walRecords, walFPI, walBytes int64
	if err := s.db.QueryRowContext(ctx, "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").Scan(&walRecords, &walFPI, &walBytes); err == nil {
		fmt.Fprintf(w, "  WAL per issuance: %.1f records, %.2f full-page images, %.0f bytes\n",
			float64(walRecords)/float64(n), float64(walFPI)/float64(n), float64(walBytes)/float64(n))
	}
	rows, err := s.db.QueryContext(ctx, `SELECT toplevel, calls, rows, total_exec_time, total_plan_time, shared_blks_hit + shared_blks_read, wal_bytes,
		left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT 20`)
	if err != nil {
		return fmt.Errorf("-pgstat: read pg_stat_statements: %w", err)
	}
	defer rows.Close()
	fmt.Fprintf(w, "  statements (time, calls, buffers and WAL bytes per issuance; rows per call):\n")
	for rows.Next() {
		var top bool
		var calls, nrows, blks, wal int64
		var exec, plan float64
		var q string
		if err := rows.Scan(&top, &calls, &nrows, &exec, &plan, &blks, &wal, &q); err != nil {
			return err
		}
		nested := ""
		if !top {
			nested = "  ↳ "
		}
		fmt.Fprintf(w, "    %10s %6.3f %6.1f %6.0f %6.1f  %s%s\n", per(time.Duration((exec+plan)*float64(time.Millisecond))),
			float64(calls)/float64(n), float64(blks)/float64(n), float64(wal)/float64(n), float64(nrows)/float64(max(calls, 1)), nested, q)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	var av, aa int64
	if err := s.db.QueryRowContext(ctx, "SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0) FROM pg_stat_user_tables").Scan(&av, &aa); err == nil {
		fmt.Fprintf(w, "  autovacuum runs %d, autoanalyze runs %d (their CPU is not above once they exit)\n", av, aa)
	}
	return nil
}
