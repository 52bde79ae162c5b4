package audit_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/audit"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// TestCAKeyLocations: the audit says where each CA key lives: a token
// (by its URI), an encrypted file, or not on this host.
func TestCAKeyLocations(t *testing.T) {
	tok := softhsmtest.New(t)
	kr := keyref.NewKeyring(keyref.Options{})
	defer kr.Close()
	newKey, err := kr.NewCAKey(pki.KeyRefs{Intermediate: tok.URI("intermediate")})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.InitContext(context.Background(), pki.InitOptions{Dir: dir, TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Passphrase: []byte("pass"), Iterations: 1000, NewKey: newKey}); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := pki.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := audit.Run(context.Background(), audit.Options{CADir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]audit.CAKey{
		"root":         {Store: "file-encrypted", Location: filepath.Join(dir, pki.RootKeyFile)},
		"intermediate": {Store: "token", Location: cfg.Keys.Intermediate},
		"issuance log": {Store: "file-encrypted", Location: filepath.Join(dir, logkey.KeyFile)},
		"OCSP responder": {Store: "memory",
			Location: "made by the server at start, certified by the intermediate; never written"},
	}
	if len(r.CAKeys) != len(want) {
		t.Fatalf("CAKeys %+v, want %d keys", r.CAKeys, len(want))
	}
	for _, k := range r.CAKeys {
		w := want[k.Role]
		if k.Store != w.Store || k.Location != w.Location {
			t.Errorf("%s key: %s at %s, want %s at %s", k.Role, k.Store, k.Location, w.Store, w.Location)
		}
		if k.Role != "issuance log" && k.Role != "OCSP responder" && (k.NotAfter.IsZero() || !k.NotAfter.After(k.NotBefore)) {
			t.Errorf("%s key: certificate validity %s..%s", k.Role, k.NotBefore, k.NotAfter)
		}
	}
	// Log and OCSP keys named in ca.json (ca init --log-key/--ocsp-key)
	// are reported in their token.
	raw, err := os.ReadFile(filepath.Join(dir, pki.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	keys, _ := doc["keys"].(map[string]any)
	keys["log"], keys["ocsp"] = tok.URI("log"), tok.URI("ocsp")
	if raw, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.ConfigFile), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err = audit.Run(context.Background(), audit.Options{CADir: dir}); err != nil {
		t.Fatal(err)
	}
	for _, k := range r.CAKeys {
		if w := map[string]string{"issuance log": tok.URI("log"), "OCSP responder": tok.URI("ocsp")}[k.Role]; w != "" && (k.Store != "token" || k.Location != w) {
			t.Errorf("%s key: %s at %s, want the token key %s", k.Role, k.Store, k.Location, w)
		}
	}
	// A root kept offline is absent here.
	off := newOfflineCA(t)
	r, err = audit.Run(context.Background(), audit.Options{CADir: off.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if r.CAKeys[0].Role != "root" || r.CAKeys[0].Store != "absent" {
		t.Fatalf("offline root: %+v", r.CAKeys[0])
	}
}
