package agent_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/internal/token"
)

func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not mention %q", what, err, p)
		}
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestStartRefusesBadTokens: an unknown, used, expired, malformed or
// foreign join token, or one for a workload rather than a node, is a clear
// refusal at start, and no state is written (nor the socket bound).
func TestStartRefusesBadTokens(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	ctx := context.Background()

	unknown, err := token.New(nil, []string{e.URL}, pki.Fingerprint(e.Root))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := token.New(nil, []string{e.URL}, [32]byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	used := e.Token(t, td+"/node/used", api.TokenRequest{})
	if _, err := client.RequestIdentity(ctx, used, pki.KeyECDSAP256, 0); err != nil {
		t.Fatal(err)
	}
	exp, err := e.Admin.CreateToken(ctx, api.TokenRequest{SPIFFEID: td + "/node/late", TTL: api.Duration(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	workloadTok := e.Token(t, td+"/ns/prod/web", api.TokenRequest{})
	testwait.Eventually(t, func() bool { return time.Now().After(exp.ExpiresAt) }, "the one-second token to expire")

	cases := []struct {
		name, token string
		want        []string
	}{
		{"no token", "", []string{"--token", "required"}},
		{"malformed", "not-a-token", nil},
		{"unknown", unknown.String(), []string{"not known"}},
		{"used", used, []string{"already used"}},
		{"expired", exp.Token, []string{"expired"}},
		{"another CA's fingerprint", foreign.String(), nil},
		{"a workload identity", workloadTok, []string{"not a node identity"}},
	}
	for _, c := range cases {
		base := shortDir(t)
		state := filepath.Join(base, "state")
		sock := filepath.Join(base, "agent.sock")
		a, err := newAgent(t, agent.Config{StateDir: state, Token: c.token, Socket: sock})
		if err == nil {
			a.Close()
		}
		wantErr(t, c.name, err, c.want...)
		t.Logf("%s: %v", c.name, err)
		if exists(filepath.Join(state, "node", identity.CertFile)) || exists(filepath.Join(state, "node", identity.KeyFile)) {
			t.Errorf("%s: node state written after a refused enrollment", c.name)
		}
		if exists(sock) {
			t.Errorf("%s: socket bound after a refused enrollment", c.name)
		}
	}
}

// enrolled makes a state directory with an enrolled node and no running agent.
func enrolled(t *testing.T, e *testenv.CA, name string) (state, sock string) {
	t.Helper()
	base := shortDir(t)
	state, sock = filepath.Join(base, "state"), filepath.Join(base, "agent.sock")
	a, err := newAgent(t, agent.Config{StateDir: state, Token: e.Token(t, td+"/node/"+name, api.TokenRequest{}), Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.NodeID().String(); got != td+"/node/"+name {
		t.Fatalf("node ID %s", got)
	}
	a.Close()
	if exists(sock) {
		t.Fatal("Close left the socket behind")
	}
	return state, sock
}

// TestStartRefusesCorruptState: a damaged state directory is a clear error
// at start that says what to do, not a crash later.
func TestStartRefusesCorruptState(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	entry(t, e, td+"/ns/prod/x", td+"/node/*", 0, nil, "unix:uid:0")

	// Entries cached by a run.
	state, sock := enrolled(t, e, "n1")
	ra := runAgent(t, agent.Config{StateDir: state, Socket: sock})
	testwait.EventuallyNil(t, func() error {
		_, err := os.Stat(filepath.Join(state, "entries.json"))
		return err
	}, "entries cached")
	ra.stop(t)

	corrupt := func(rel, content string) func() {
		p := filepath.Join(state, rel)
		old, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return func() { os.WriteFile(p, old, 0o600) }
	}
	try := func(what string, parts ...string) {
		t.Helper()
		a, err := newAgent(t, agent.Config{StateDir: state, Socket: sock})
		if err == nil {
			a.Close()
		}
		wantErr(t, what, err, parts...)
		t.Logf("%s: %v", what, err)
	}

	restore := corrupt("entries.json", "{garbage")
	try("garbage entries.json", "damaged", "entries.json")
	restore()

	restore = corrupt(filepath.Join("node", identity.CertFile), "garbage, not PEM\n")
	try("garbage node/cert.pem", "damaged", "--token")
	restore()

	restore = corrupt(filepath.Join("node", identity.KeyFile), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	try("garbage node/key.pem", "damaged")
	restore()

	// Another node's key next to this node's certificate.
	other := e.Leaf(t, td+"/node/other")
	keyPEM, err := pki.MarshalPrivateKey(other.Key, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	restore = corrupt(filepath.Join("node", identity.KeyFile), string(keyPEM))
	try("a key that does not match node/cert.pem", "damaged")
	restore()

	p := filepath.Join(state, "node", "mutual.json")
	old, _ := os.ReadFile(p)
	os.Remove(p)
	try("no CA address", "damaged", "CA address")
	os.WriteFile(p, old, 0o644)

	// Restored, it starts again.
	a, err := newAgent(t, agent.Config{StateDir: state, Socket: sock})
	if err != nil {
		t.Fatalf("restored state: %v", err)
	}
	a.Close()
}

// TestStartRefusesTakenSocket: a socket another process serves is a clear
// error (and is left alone); a file that is not a socket is refused; a
// stale socket file is replaced.
func TestStartRefusesTakenSocket(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	state, sock := enrolled(t, e, "n1")

	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a, err := newAgent(t, agent.Config{StateDir: state, Socket: sock})
	if err == nil {
		a.Close()
	}
	wantErr(t, "socket served by another process", err, sock, "another process")
	if c, err := net.Dial("unix", sock); err != nil {
		t.Errorf("the other process's socket was disturbed: %v", err)
	} else {
		c.Close()
	}
	ln.Close()

	// Another running agent holds it.
	ra := runAgent(t, agent.Config{StateDir: state, Socket: sock})
	a, err = newAgent(t, agent.Config{StateDir: state, Socket: sock})
	if err == nil {
		a.Close()
	}
	wantErr(t, "socket served by a running agent", err, "another process")
	ra.stop(t)

	// A stale socket file (its process died) is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if !exists(sock) {
		t.Fatal("the stale socket file is gone")
	}
	a, err = newAgent(t, agent.Config{StateDir: state, Socket: sock})
	if err != nil {
		t.Fatalf("a stale socket file: %v", err)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v %v, want 0666 (any process may call; attestation decides)", st.Mode().Perm(), err)
	}
	a.Close()

	// A regular file is not replaced.
	if err := os.WriteFile(sock, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err = newAgent(t, agent.Config{StateDir: state, Socket: sock})
	if err == nil {
		a.Close()
	}
	wantErr(t, "a regular file at the socket path", err, "not a socket")
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Error("the regular file was overwritten")
	}
}

// TestStartRefusesUnknownOwner: a --write owner that does not exist is an
// error at start.
func TestStartRefusesUnknownOwner(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	state, sock := enrolled(t, e, "n1")
	w, err := agent.ParseWriteSpec(td + "/ns/prod/web=" + filepath.Join(t.TempDir(), "tls") + ",owner=no-such-user-here")
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAgent(t, agent.Config{StateDir: state, Socket: sock, Writes: []agent.WriteSpec{w}})
	if err == nil {
		a.Close()
	}
	wantErr(t, "unknown owner", err, "owner", "no-such-user-here")
}

// TestParseWriteSpec: --write values, and errors that name the problem.
func TestParseWriteSpec(t *testing.T) {
	t.Parallel()
	good := []struct {
		in     string
		dir    string
		owner  string
		mode   os.FileMode
		reload string
	}{
		{"spiffe://example.org/ns/prod/web=/etc/web/tls", "/etc/web/tls", "", 0o600, ""},
		{"spiffe://example.org/ns/prod/web=/etc/web/tls,owner=www-data,mode=0640", "/etc/web/tls", "www-data", 0o640, ""},
		{"spiffe://example.org/ns/prod/web=/etc/web/tls,mode=600", "/etc/web/tls", "", 0o600, ""},
		{"spiffe://example.org/ns/prod/nginx=/abs/dir,mode=0600,reload=nginx -s reload -c /etc/nginx/nginx.conf", "/abs/dir", "", 0o600, "nginx -s reload -c /etc/nginx/nginx.conf"},
		// The reload command takes the rest, commas and = included.
		{"spiffe://example.org/a=/d,reload=sh -c 'a=1, b=2',owner=x", "/d", "", 0o600, "sh -c 'a=1, b=2',owner=x"},
		{"spiffe://example.org/a=/d,owner=root,reload=systemctl reload pg", "/d", "root", 0o600, "systemctl reload pg"},
	}
	for _, g := range good {
		w, err := agent.ParseWriteSpec(g.in)
		if err != nil {
			t.Errorf("%q: %v", g.in, err)
			continue
		}
		if w.Dir != g.dir || w.Owner != g.owner || w.Mode != g.mode || w.Reload != g.reload {
			t.Errorf("%q: got dir=%q owner=%q mode=%o reload=%q", g.in, w.Dir, w.Owner, w.Mode, w.Reload)
		}
		if want, _, _ := strings.Cut(g.in, "="); w.ID.String() != want {
			t.Errorf("%q: ID %s", g.in, w.ID)
		}
	}

	bad := []struct {
		in   string
		want []string
	}{
		{"", []string{"ID=DIR"}},
		{"/etc/web/tls", []string{"ID=DIR"}},
		{"web=/etc/web/tls", []string{"web"}},
		{"https://example.org/web=/etc/web/tls", []string{"https://example.org/web"}},
		{"spiffe://example.org/ns/prod/web=tls", []string{"absolute"}},
		{"spiffe://example.org/ns/prod/web=", []string{"absolute"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=0644", []string{"mode", "0644"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=0666", []string{"mode", "0666"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=rw", []string{"mode", "octal"}},
		// A private key readable or writable by others, or writable by the
		// group, is refused: 0600 or 0640 at most.
		{"spiffe://example.org/ns/prod/web=/d,mode=0604", []string{"mode", "0604"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=0607", []string{"mode", "0607"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=0602", []string{"mode", "0602"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=0620", []string{"mode", "0620"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=0630", []string{"mode", "0630"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=01600", []string{"mode"}},
		{"spiffe://example.org/ns/prod/web=/d,mode=", []string{"mode"}},
		{"spiffe://example.org/ns/prod/web=/d,user=www", []string{"unknown option", "user"}},
		{"spiffe://example.org/ns/prod/web=/d,,mode=0600", []string{"unknown option"}},
	}
	for _, b := range bad {
		_, err := agent.ParseWriteSpec(b.in)
		if err == nil {
			t.Errorf("%q: accepted", b.in)
			continue
		}
		if !strings.Contains(err.Error(), "--write") {
			t.Errorf("%q: error %q does not name the flag", b.in, err)
		}
		for _, p := range b.want {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%q: error %q does not mention %q", b.in, err, p)
			}
		}
	}
}
