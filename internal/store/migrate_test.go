package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/mutual-tls/mutual/internal/pgtest"
)

// TestMigrationOutsideTransaction: on PostgreSQL a migration marked
// noTransaction builds its index with CREATE INDEX CONCURRENTLY (which
// fails inside a transaction), under the migration lock for the session;
// a build that fails part-way leaves its index invalid, and the next start
// drops and rebuilds it rather than keep it (IF NOT EXISTS alone would).
func TestMigrationOutsideTransaction(t *testing.T) {
	ctx := context.Background()
	db := openPostgresDB(t)
	if valid := pgIndexValid(t, db, "partner_sightings_by_reporter"); !valid {
		t.Fatal("migration 0017's index is not valid")
	}
	ms, err := readMigrations(migrations, "migrations/postgres")
	if err != nil {
		t.Fatal(err)
	}
	next := ms[len(ms)-1].version + 1
	ms = append(ms,
		migration{version: next, name: "dups.sql", body: "CREATE TABLE mig_t (x INT); INSERT INTO mig_t VALUES (1), (1);"},
		migration{version: next + 1, name: "unique.sql", body: noTransaction + "\n-- x is unique\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS mig_t_x\n    ON mig_t (x);\n"})
	if err := db.apply(ctx, ms); err == nil || !strings.Contains(err.Error(), "unique.sql") {
		t.Fatalf("a unique index over duplicates: %v, want the migration's failure", err)
	}
	if pgIndexValid(t, db, "mig_t_x") {
		t.Fatal("the failed build left a valid index")
	}
	if v := schemaAt(t, db); v != next {
		t.Fatalf("schema at %d after the no-transaction migration failed, want %d (the one before it committed)", v, next)
	}
	if _, err := db.writer.Exec("DELETE FROM mig_t WHERE ctid = (SELECT MIN(ctid) FROM mig_t)"); err != nil {
		t.Fatal(err)
	}
	if err := db.apply(ctx, ms); err != nil {
		t.Fatalf("migrating again after the duplicate went: %v", err)
	}
	if !pgIndexValid(t, db, "mig_t_x") {
		t.Fatal("the invalid index left by the failed build was kept")
	}
	if v := schemaAt(t, db); v != next+1 {
		t.Fatalf("schema at %d, want %d", v, next+1)
	}
}

// TestMigrationWaitsForTheLock: a replica migrating while another holds
// the migration lock waits for it, as long as its context allows.
func TestMigrationWaitsForTheLock(t *testing.T) {
	ctx := context.Background()
	db := openPostgresDB(t)
	holder, err := db.writer.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := db.migrate(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("migrating while another session holds the lock: %v, want to wait until the deadline", err)
	}
	if _, err := holder.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", migrationLock); err != nil {
		t.Fatal(err)
	}
	if err := db.migrate(ctx); err != nil {
		t.Fatalf("migrating once the lock is free: %v", err)
	}
}

// openPostgresDB opens a store on a new database of a new test server,
// closed when the test ends.
func openPostgresDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), pgtest.Start(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func pgIndexValid(t *testing.T, db *DB, name string) bool {
	t.Helper()
	var valid bool
	err := db.reader.QueryRow(`SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1`, name).Scan(&valid)
	if err != nil {
		t.Fatalf("index %s: %v", name, err)
	}
	return valid
}

func schemaAt(t *testing.T, db *DB) int64 {
	t.Helper()
	var v int64
	if err := db.reader.QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMigrationIndexNames: every embedded migration is read without error,
// and a no-transaction migration whose index the checks would look up
// under another name (capitals, a schema, quotes) or that could not run
// again (no IF NOT EXISTS) is refused when the migrations are read, not
// at every start.
func TestMigrationIndexNames(t *testing.T) {
	for _, dir := range []string{"migrations/postgres", "migrations/sqlite"} {
		if _, err := readMigrations(migrations, dir); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
	build := func(name string) string {
		return noTransaction + "\nCREATE INDEX CONCURRENTLY IF NOT EXISTS " + name + " ON t (x);\n"
	}
	for _, tt := range []struct{ body, want string }{
		{build("Ix_T"), `"Ix_T"`},
		{build("public.ix_t"), `"public.ix_t"`},
		{build(`"ix_t"`), `"\"ix_t\""`},
		{noTransaction + "\ncreate unique index concurrently ix_t on t (x);\n", "IF NOT EXISTS"},
	} {
		fsys := fstest.MapFS{"m/0001_ok.sql": {Data: []byte(build("ix_ok"))}, "m/0002_bad.sql": {Data: []byte(tt.body)}}
		_, err := readMigrations(fsys, "m")
		if err == nil || !strings.Contains(err.Error(), "0002_bad.sql") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want it refused naming the file and %s", tt.body, err, tt.want)
		}
	}
	ms, err := readMigrations(fstest.MapFS{"m/0001_ok.sql": {Data: []byte(build("ix_ok") + "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix_two(x);\n")}}, "m")
	if err != nil || len(ms) != 1 || strings.Join(ms[0].indexes(), ",") != "ix_ok,ix_two" {
		t.Fatalf("a valid migration: %v, %v", ms, err)
	}
}
