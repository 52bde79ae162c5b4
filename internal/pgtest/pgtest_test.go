package pgtest

import (
	"database/sql"
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	url := s.NewDatabase(t)
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow("SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s on port %d", v, s.Port)
	s.Stop(t)
	if err := db.Ping(); err == nil {
		// A pooled connection may linger; a fresh query must fail.
		if _, err := db.Exec("SELECT 1"); err == nil {
			t.Fatal("query succeeded with the server stopped")
		}
	}
	s.Start(t)
	if _, err := db.Exec("SELECT 1"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
