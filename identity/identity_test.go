package identity_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
)

// sameIdentity fails unless got holds exactly want's certificates and key.
func sameIdentity(t *testing.T, got, want *identity.Identity) {
	t.Helper()
	if got.ID != want.ID {
		t.Errorf("ID = %s, want %s", got.ID, want.ID)
	}
	sameCerts(t, "chain", got.Chain, want.Chain)
	sameCerts(t, "roots", got.Roots, want.Roots)
	if !pki.PublicKeysEqual(got.Key.Public(), want.Key.Public()) {
		t.Error("the key differs")
	}
}

func sameCerts(t *testing.T, what string, got, want []*x509.Certificate) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s has %d certificates, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("%s certificate %d is %q, want %q", what, i, got[i].Subject, want[i].Subject)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	ca := testca.New(t)
	want := ca.Leaf(t, "spiffe://example.org/ns/prod/web", testca.DNS("web.example.org"), testca.IP("10.0.0.1"))
	dir := filepath.Join(t.TempDir(), "web") // Save creates it
	if err := want.Save(dir); err != nil {
		t.Fatal(err)
	}
	modes := map[string]fs.FileMode{".": 0o700, identity.CertFile: 0o644, identity.KeyFile: 0o600, identity.BundleFile: 0o644}
	for name, mode := range modes {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The three names, the ..data link and the one set it points to.
	if len(entries) != 5 {
		t.Errorf("Save left %d entries, want the 3 files, ..data and one set", len(entries))
	}
	for _, name := range []string{identity.CertFile, identity.KeyFile, identity.BundleFile} {
		if target, err := os.Readlink(filepath.Join(dir, name)); err != nil || target != "..data/"+name {
			t.Errorf("%s is not a link through ..data (%q, %v): the set would not switch at once", name, target, err)
		}
	}

	got, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameIdentity(t, got, want)
	if got.Leaf() != got.Chain[0] {
		t.Error("Leaf() is not the first certificate of the chain")
	}
	if got.Leaf().DNSNames[0] != "web.example.org" {
		t.Errorf("leaf DNS names %q", got.Leaf().DNSNames)
	}
}

func TestSaveReplaces(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	old := ca.Leaf(t, "spiffe://example.org/web")
	if err := old.Save(dir); err != nil {
		t.Fatal(err)
	}
	// A key file someone made readable is made private again on renewal.
	if err := os.Chmod(filepath.Join(dir, identity.KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	renewed := ca.Leaf(t, "spiffe://example.org/web")
	if err := renewed.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameIdentity(t, got, renewed)
	if st, err := os.Stat(filepath.Join(dir, identity.KeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file after renewal: %v, %v; want mode 0600", st.Mode(), err)
	}
}

func TestSaveRefusesIncomplete(t *testing.T) {
	full := testca.New(t).Leaf(t, "spiffe://example.org/web")
	tests := []struct {
		name   string
		change func(*identity.Identity)
	}{
		{"no chain", func(i *identity.Identity) { i.Chain = nil }},
		{"no key", func(i *identity.Identity) { i.Key = nil }},
		{"no roots", func(i *identity.Identity) { i.Roots = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := *full
			tt.change(&id)
			dir := filepath.Join(t.TempDir(), "id")
			if err := id.Save(dir); err == nil {
				t.Fatal("Save accepted an incomplete identity")
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused Save created %s", dir)
			}
		})
	}
}

func TestLoadCAInitDirectories(t *testing.T) {
	ca := testca.New(t)
	for dir, want := range map[string]string{
		ca.AdminDir:  "spiffe://example.org/admin/operator",
		ca.ServerDir: "spiffe://example.org/mutual/server",
	} {
		id, err := identity.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		if id.ID.String() != want {
			t.Errorf("%s holds %s, want %s", dir, id.ID, want)
		}
		if len(id.Chain) != 2 || !id.Chain[1].Equal(ca.Intermediate) || len(id.Roots) != 1 || !id.Roots[0].Equal(ca.Root) {
			t.Errorf("%s: chain of %d, %d roots; want leaf+intermediate and the root", dir, len(id.Chain), len(id.Roots))
		}
	}
}

func TestLoadDoesNotCheckDates(t *testing.T) {
	ca := testca.New(t)
	dir := t.TempDir()
	if err := ca.Leaf(t, "spiffe://example.org/web", testca.Expired()).Save(dir); err != nil {
		t.Fatal(err)
	}
	id, err := identity.Load(dir)
	if err != nil {
		t.Fatalf("Load refused an expired identity: %v", err)
	}
	if !id.Leaf().NotAfter.Before(time.Now()) {
		t.Error("testca.Expired made a certificate that has not expired")
	}
}

func TestLoadMissing(t *testing.T) {
	ca := testca.New(t)
	tests := []struct {
		name   string
		remove string // a file to remove; empty: the directory is never made
		names  string
	}{
		{"no directory", "", "web"},
		{"no certificate", identity.CertFile, identity.CertFile},
		{"no key", identity.KeyFile, identity.KeyFile},
		{"no bundle", identity.BundleFile, identity.BundleFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "web")
			if tt.remove != "" {
				if err := ca.Leaf(t, "spiffe://example.org/web").Save(dir); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(dir, tt.remove)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := identity.Load(dir)
			if !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("err = %v, want one wrapping fs.ErrNotExist", err)
			}
			if !strings.Contains(err.Error(), tt.names) {
				t.Errorf("error %q does not name %s", err, tt.names)
			}
		})
	}
}

func TestLoadKeyMismatch(t *testing.T) {
	ca := testca.New(t)
	dir, otherDir := t.TempDir(), t.TempDir()
	if err := ca.Leaf(t, "spiffe://example.org/web").Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := ca.Leaf(t, "spiffe://example.org/web").Save(otherDir); err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(filepath.Join(otherDir, identity.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, identity.KeyFile), other, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = identity.Load(dir)
	if err == nil {
		t.Fatal("Load accepted a key that does not belong to the certificate")
	}
	for _, want := range []string{identity.KeyFile, identity.CertFile, "does not belong"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestLoadBroken(t *testing.T) {
	ca := testca.New(t)
	tests := []struct {
		name  string
		file  string
		data  func(t *testing.T) []byte
		names string
	}{
		{"certificate not PEM", identity.CertFile, func(*testing.T) []byte { return []byte("not a certificate") }, identity.CertFile},
		{"bundle empty", identity.BundleFile, func(*testing.T) []byte { return nil }, identity.BundleFile},
		{"key not PEM", identity.KeyFile, func(*testing.T) []byte { return []byte("not a key") }, identity.KeyFile},
		{"key encrypted", identity.KeyFile, func(t *testing.T) []byte {
			k, err := pki.MarshalPrivateKey(ca.Leaf(t, "spiffe://example.org/web").Key, []byte("secret"), 1000)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}, "passphrase"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := ca.Leaf(t, "spiffe://example.org/web").Save(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tt.file), tt.data(t), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := identity.Load(dir); err == nil || !strings.Contains(err.Error(), tt.names) {
				t.Errorf("Load = %v, want an error naming %q", err, tt.names)
			}
		})
	}
}

func TestLoadNeedsOneSPIFFEID(t *testing.T) {
	ca := testca.New(t)
	tests := []struct {
		name string
		uris []*url.URL
	}{
		{"no URI", nil},
		{"two SPIFFE IDs", []*url.URL{spiffeid.RequireFromString("spiffe://example.org/a").URL(), spiffeid.RequireFromString("spiffe://example.org/b").URL()}},
		{"not a SPIFFE ID", []*url.URL{{Scheme: "https", Host: "web.example.org"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := ca.Leaf(t, "spiffe://example.org/web")
			tmpl, err := ca.Issuer.Template(pki.Leaf{ID: id.ID, PublicKey: id.Key.Public(), TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = tt.uris
			cert, err := ca.Issuer.Sign(tmpl, id.Key.Public())
			if err != nil {
				t.Fatal(err)
			}
			id.Chain[0] = cert
			dir := t.TempDir()
			if err := id.Save(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := identity.Load(dir); err == nil || !strings.Contains(err.Error(), "no SPIFFE ID") {
				t.Errorf("Load = %v, want an error saying the certificate has no SPIFFE ID", err)
			}
		})
	}
}

// TestTLS: the material TLSCertificate and RootPool return makes a mutual
// TLS connection in which each side sees the other's SPIFFE ID.
func TestTLS(t *testing.T) {
	ca := testca.New(t)
	server := ca.Leaf(t, "spiffe://example.org/db", testca.DNS("db.example.org"))
	client := ca.Leaf(t, "spiffe://example.org/web")

	tc := client.TLSCertificate()
	if tc.Leaf != client.Leaf() || tc.PrivateKey != client.Key || len(tc.Certificate) != len(client.Chain) {
		t.Fatalf("TLSCertificate = %d certificates, leaf %v", len(tc.Certificate), tc.Leaf.Subject)
	}
	for i, der := range tc.Certificate {
		if string(der) != string(client.Chain[i].Raw) {
			t.Errorf("TLS certificate %d is not chain certificate %d", i, i)
		}
	}

	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	serverConn := tls.Server(s, &tls.Config{
		Certificates: []tls.Certificate{server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    server.RootPool(),
		MinVersion:   tls.VersionTLS13,
	})
	clientConn := tls.Client(c, &tls.Config{
		Certificates: []tls.Certificate{client.TLSCertificate()},
		RootCAs:      client.RootPool(),
		ServerName:   "db.example.org",
		MinVersion:   tls.VersionTLS13,
	})
	errc := make(chan error, 1)
	go func() { errc <- serverConn.Handshake() }()
	if err := clientConn.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := serverConn.ConnectionState().PeerCertificates[0].URIs[0].String(); got != client.ID.String() {
		t.Errorf("server sees %s, want %s", got, client.ID)
	}
	if got := clientConn.ConnectionState().PeerCertificates[0].URIs[0].String(); got != server.ID.String() {
		t.Errorf("client sees %s, want %s", got, server.ID)
	}
}

func TestExpiredError(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	var err error = &identity.ExpiredError{Path: "/etc/mutual/web/cert.pem", NotAfter: at}
	var ee *identity.ExpiredError
	if !errors.As(err, &ee) || ee.NotAfter != at {
		t.Fatal("errors.As does not find the ExpiredError")
	}
	for _, want := range []string{"/etc/mutual/web/cert.pem", "2030-01-02T02:04:05Z"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}
