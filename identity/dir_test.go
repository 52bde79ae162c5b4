package identity_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/identity/identitytest"
)

func newCA(t *testing.T) *identitytest.CA {
	t.Helper()
	ca, err := identitytest.NewCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *identitytest.CA, id string) *identity.Identity {
	t.Helper()
	idn, err := ca.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	return idn
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

// TestWriteDir: what each option puts on disk, read back with Load and
// ReadCAURLs.
func TestWriteDir(t *testing.T) {
	ca := newCA(t)
	self := &identity.Owner{UID: os.Getuid(), GID: os.Getgid()}
	tests := []struct {
		name     string
		opts     identity.WriteOptions
		keyMode  fs.FileMode
		dirMode  fs.FileMode
		wantURLs []string
	}{
		{"defaults", identity.WriteOptions{}, 0o600, 0o700, nil},
		{"CA addresses", identity.WriteOptions{CAURLs: []string{"https://a:8443", "https://b:8443"}}, 0o600, 0o700, []string{"https://a:8443", "https://b:8443"}},
		{"group-readable key", identity.WriteOptions{KeyMode: 0o640}, 0o640, 0o700, nil},
		{"for an owner", identity.WriteOptions{Owner: self, CAURLs: []string{"https://a:8443"}}, 0o600, 0o755, []string{"https://a:8443"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "web")
			want := issue(t, ca, "spiffe://example.org/ns/prod/web")
			if err := identity.WriteDir(dir, want, tt.opts); err != nil {
				t.Fatal(err)
			}
			got, err := identity.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			sameIdentity(t, got, want)
			if m := mode(t, filepath.Join(dir, identity.KeyFile)); m != tt.keyMode {
				t.Errorf("key mode %v, want %v", m, tt.keyMode)
			}
			for _, f := range []string{identity.CertFile, identity.BundleFile} {
				if m := mode(t, filepath.Join(dir, f)); m != 0o644 {
					t.Errorf("%s mode %v, want 0644", f, m)
				}
			}
			if m := mode(t, dir); m&^0o022 != tt.dirMode&^0o022 { // the umask may take group and other write
				t.Errorf("directory mode %v, want %v", m, tt.dirMode)
			}
			urls, err := identity.ReadCAURLs(dir)
			if err != nil || strings.Join(urls, " ") != strings.Join(tt.wantURLs, " ") {
				t.Errorf("ReadCAURLs = %v, %v; want %v", urls, err, tt.wantURLs)
			}
		})
	}
}

// TestWriteDirRefuses: what WriteDir will not write, with an error that
// names the fault; nothing is left behind.
func TestWriteDirRefuses(t *testing.T) {
	ca := newCA(t)
	good := issue(t, ca, "spiffe://example.org/ns/prod/web")
	noKey := *good
	noKey.Key = nil
	noRoots := *good
	noRoots.Roots = nil
	tests := []struct {
		name string
		id   *identity.Identity
		opts identity.WriteOptions
		want string
	}{
		{"nil identity", nil, identity.WriteOptions{}, "chain, key and roots are required"},
		{"no key", &noKey, identity.WriteOptions{}, "chain, key and roots are required"},
		{"no roots", &noRoots, identity.WriteOptions{}, "chain, key and roots are required"},
		{"key readable by others", good, identity.WriteOptions{KeyMode: 0o644}, "key mode 0644"},
		{"key writable by the group", good, identity.WriteOptions{KeyMode: 0o660}, "key mode 0660"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "web")
			err := identity.WriteDir(dir, tt.id, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("WriteDir = %v, want an error naming %s and saying %q", err, dir, tt.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused write created %s", dir)
			}
		})
	}
}

// TestWriteDirUnsafe: files for an owner are not written where a user other
// than root, the writer and the owner could swap names: an *UnsafeDirError
// names the directory at fault, and no key appears.
func TestWriteDirUnsafe(t *testing.T) {
	ca := newCA(t)
	id := issue(t, ca, "spiffe://example.org/ns/prod/web")
	self := &identity.Owner{UID: os.Getuid(), GID: os.Getgid()}
	mk := func(t *testing.T, perm fs.FileMode) string {
		d := filepath.Join(t.TempDir(), "shared")
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, perm); err != nil {
			t.Fatal(err)
		}
		return d
	}
	tests := []struct {
		name   string
		dir    func(t *testing.T) (dir, atFault string)
		reason string
	}{
		{"world-writable", func(t *testing.T) (string, string) { d := mk(t, 0o777); return d, d }, "writable by every user"},
		{"under a world-writable directory", func(t *testing.T) (string, string) {
			d := mk(t, 0o777)
			return filepath.Join(d, "tls"), d
		}, "writable by every user"},
		{"not a directory", func(t *testing.T) (string, string) {
			f := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return f, f
		}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, atFault := tt.dir(t)
			for what, err := range map[string]error{
				"PrepareDir": identity.PrepareDir(dir, identity.WriteOptions{Owner: self}),
				"WriteDir":   identity.WriteDir(dir, id, identity.WriteOptions{Owner: self}),
			} {
				var ue *identity.UnsafeDirError
				if !errors.As(err, &ue) || ue.Dir != atFault || ue.Reason != tt.reason {
					t.Errorf("%s = %v, want an UnsafeDirError for %s: %s", what, err, atFault, tt.reason)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, identity.KeyFile)); !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				t.Errorf("a key was written: %v", err)
			}
		})
	}
	t.Run("the same directory for the writer itself", func(t *testing.T) {
		// Without an owner nothing above the directory is judged: it
		// is the writer's own business where its files go.
		dir := filepath.Join(mk(t, 0o777), "tls")
		if err := identity.WriteDir(dir, id, identity.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteDirSwitchesSets: every write is a new set behind ..data; a
// reader following the names sees the new identity, only one set stays,
// and the CA addresses are kept when a write gives none.
func TestWriteDirSwitchesSets(t *testing.T) {
	ca := newCA(t)
	dir := filepath.Join(t.TempDir(), "web")
	urls := []string{"https://ca.example.org:8443"}
	if err := identity.WriteDir(dir, issue(t, ca, "spiffe://example.org/ns/prod/web"), identity.WriteOptions{CAURLs: urls}); err != nil {
		t.Fatal(err)
	}
	// A crash between making a link and renaming it leaves one behind.
	if err := os.Symlink("nowhere", filepath.Join(dir, ".tmp-link-crash")); err != nil {
		t.Fatal(err)
	}
	var last *identity.Identity
	for i := 0; i < 3; i++ {
		last = issue(t, ca, "spiffe://example.org/ns/prod/web")
		if err := last.Save(dir); err != nil {
			t.Fatal(err)
		}
	}
	got, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameIdentity(t, got, last)
	if u, err := identity.ReadCAURLs(dir); err != nil || len(u) != 1 || u[0] != urls[0] {
		t.Errorf("after writes without addresses, ReadCAURLs = %v, %v; want %v kept", u, err, urls)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// cert, key, bundle, mutual.json, ..data and the one current set.
	if len(names) != 6 {
		t.Errorf("the directory holds %v, want the four names, ..data and one set", names)
	}
	target, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil || !strings.HasPrefix(target, ".mutual-") {
		t.Errorf("..data -> %q (%v), want the current set", target, err)
	}
}

// TestCAURLs: the addresses file alone, as the CA service and `mutual dev`
// keep it for the admin directory.
func TestCAURLs(t *testing.T) {
	dir := t.TempDir()
	if urls, err := identity.ReadCAURLs(dir); err != nil || urls != nil {
		t.Fatalf("no file: %v, %v; want none and no error", urls, err)
	}
	if err := identity.WriteCAURLs(dir, []string{"https://a:8443"}); err != nil {
		t.Fatal(err)
	}
	if urls, err := identity.ReadCAURLs(dir); err != nil || len(urls) != 1 || urls[0] != "https://a:8443" {
		t.Fatalf("ReadCAURLs = %v, %v", urls, err)
	}
	path := filepath.Join(dir, identity.CAURLsFile)
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.ReadCAURLs(dir); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a broken file: %v, want an error naming %s", err, path)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.ReadCAURLs(dir); err == nil {
		t.Fatal("a directory in place of the file: no error")
	}
}
