package dev_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/dev"
)

// TestIntroKeepsTheTokenOutOfArgv: the enrollment command mutual dev
// prints reads the join token from a 0600 file; no printed command carries
// a token in argv, where every user of the machine sees it in ps.
func TestIntroKeepsTheTokenOutOfArgv(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := dev.Run(ctx, dev.Options{Dir: dir, NoDemo: true, Ready: func(*caservice.Service, *dev.Demo) { cancel() }}, &out)
	if err != nil && ctx.Err() == nil {
		t.Fatalf("dev.Run: %v\n%s", err, out.String())
	}
	printed := out.String()
	if regexp.MustCompile(`--token[ =]`).MatchString(printed) || strings.Contains(printed, "mutual1.") {
		t.Errorf("mutual dev prints a token in a command line:\n%s", printed)
	}
	tokFile := filepath.Join(dir, dev.TokenFile)
	if !strings.Contains(printed, "cert request --token-file "+tokFile+" ") {
		t.Errorf("mutual dev does not print `cert request --token-file %s`:\n%s", tokFile, printed)
	}
	st, err := os.Stat(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %o, want 0600", tokFile, st.Mode().Perm())
	}
	b, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^mutual1\.[A-Za-z0-9_-]+\n$`).Match(b) {
		t.Errorf("%s does not hold one join token: %q", tokFile, b)
	}
}
