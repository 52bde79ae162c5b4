// Package testopenssl runs the openssl command in tests, to read what the
// project writes with a client nobody here wrote.
package testopenssl

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Need skips the test when openssl is missing, and fails it under CI
// (where it must be installed).
func Need(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is needed (apt-get install openssl)")
		}
		t.Skip("openssl is not installed")
	}
}

// Run runs openssl with args and returns its output; an error carries the
// output.
func Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	Need(t)
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("openssl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// KeyMatchesCert says whether openssl finds in keyPath the public key of
// the (first) certificate in certPath; both may be one combined file.
func KeyMatchesCert(t testing.TB, certPath, keyPath string) error {
	t.Helper()
	cert, err := Run(t, "x509", "-in", certPath, "-noout", "-pubkey")
	if err != nil {
		return err
	}
	key, err := Run(t, "pkey", "-in", keyPath, "-pubout")
	if err != nil {
		return err
	}
	if !strings.Contains(cert, "BEGIN PUBLIC KEY") || cert != key {
		return fmt.Errorf("the key in %s is not that of the certificate in %s", keyPath, certPath)
	}
	return nil
}
