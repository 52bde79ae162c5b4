package cli

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStorePasswordKeptOutOfArgv: the store URL comes from --store-file or
// $MUTUAL_STORE without a password on the command line, and a password
// given in --store is warned about.
func TestStorePasswordKeptOutOfArgv(t *testing.T) {
	for s, want := range map[string]bool{
		"postgres://mutual:s3cret@db:5432/ca":          true,
		"postgres://mutual@db/ca?password=s3cret":      true,
		"host=db user=mutual password=s3cret dbname=x": true,
		"postgres://mutual@db:5432/ca":                 false,
		"sqlite:/var/lib/mutual/mutual.db":             false,
	} {
		if got := storeHasPassword(s); got != want {
			t.Errorf("storeHasPassword(%q) = %v, want %v", s, got, want)
		}
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	f := filepath.Join(t.TempDir(), "store")
	os.WriteFile(f, []byte("postgres://mutual:s3cret@db/ca\n"), 0o600)
	got, err := (&storeFlags{storeFile: f}).url(log)
	if err != nil || got != "postgres://mutual:s3cret@db/ca" {
		t.Errorf("--store-file: %q, %v", got, err)
	}
	if _, err := (&storeFlags{storeFile: f, store: "sqlite:x"}).url(log); err == nil {
		t.Error("--store and --store-file together accepted")
	}
	t.Setenv("MUTUAL_STORE", "postgres://mutual:env@db/ca")
	if got, _ := (&storeFlags{}).url(log); got != "postgres://mutual:env@db/ca" {
		t.Errorf("$MUTUAL_STORE: %q", got)
	}
	if logs.Len() != 0 {
		t.Errorf("warned without a password in argv: %s", logs.String())
	}
	if got, _ := (&storeFlags{store: "postgres://mutual:s3cret@db/ca"}).url(log); got != "postgres://mutual:s3cret@db/ca" {
		t.Errorf("--store: %q", got)
	}
	if !strings.Contains(logs.String(), "--store-file") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the warning for a password in --store should name the fix and not repeat the password: %s", logs.String())
	}
}
