// Package softhsmtest makes a throw-away SoftHSM2 token for tests that keep
// keys in PKCS#11, and names objects in it by pkcs11: URI.
//
//	tok := softhsmtest.New(t)
//	ref := tok.URI("intermediate") // pkcs11:token=...;object=intermediate?module-path=...&pin-source=file:...
//
// SoftHSM2 missing (or a build without cgo) skips the test, except under
// CI=1, where it fails: .ci/run installs SoftHSM2.
package softhsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// PIN is the user PIN of every token New makes.
const PIN = "1234"

// Token is a fresh SoftHSM2 token in a test's temporary directory, its user
// PIN in a file.
type Token struct {
	// Module is the SoftHSM2 PKCS#11 library.
	Module string
	// Label is the token's label.
	Label string
	// PINFile holds PIN.
	PINFile string
}

// Modules are the places SoftHSM2's library is looked for.
var Modules = []string{"/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"}

// New makes a SoftHSM2 token for one test, pointing SOFTHSM2_CONF at its own
// token directory (so the test must not run in parallel with another that
// sets it).
func New(tb testing.TB) Token {
	tb.Helper()
	util, err := exec.LookPath("softhsm2-util")
	module := ""
	for _, m := range Modules {
		if _, statErr := os.Stat(m); statErr == nil {
			module = m
			break
		}
	}
	switch {
	case !cgoBuilt:
		skipOrFail(tb, "this test binary was built without cgo, and PKCS#11 needs cgo")
	case err != nil || module == "":
		skipOrFail(tb, fmt.Sprintf("SoftHSM2 is missing (softhsm2-util: %v, module: %q); apt-get install softhsm2", err, module))
	}
	dir := tb.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens), 0o600); err != nil {
		tb.Fatal(err)
	}
	// SoftHSM2 reads its configuration when the module is initialised,
	// which each Keyring does afresh (and Close finalises).
	tb.Setenv("SOFTHSM2_CONF", conf)
	label := "mutual-test"
	out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", PIN).CombinedOutput()
	if err != nil {
		tb.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(PIN+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return Token{Module: module, Label: label, PINFile: pinFile}
}

// URI names object in the token.
func (t Token) URI(object string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s", t.Label, object, t.Module, t.PINFile)
}

func skipOrFail(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s; .ci/run installs SoftHSM2 and builds with cgo", why)
	}
	tb.Skip(why + "; skipping the PKCS#11 token test")
}
