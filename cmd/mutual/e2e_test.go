package main

// End-to-end tests of the real mutual binary: TestMain builds it once, and
// every test runs it as a subprocess against CAs and CA services of its own,
// on 127.0.0.1 only. openssl and curl act as independent clients: they know
// nothing of mutual's code, only of the files and the HTTPS API it promises.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testport"
)

// mutualBin is the binary TestMain built.
var mutualBin string

// safetyNet bounds every subprocess and every wait, so a hang fails the
// test instead of the whole run. It is not a performance assertion.
const safetyNet = 60 * time.Second

const testPassphrase = "correct horse battery staple e2e"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mutual-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	mutualBin = filepath.Join(dir, "mutual")
	build := exec.Command("go", "build", "-o", mutualBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build -o %s .: %v\n%s", mutualBin, err, out)
		return 1
	}
	return m.Run()
}

// ---------------------------------------------------------------------------
// Running the binary

type result struct {
	stdout, stderr string
	code           int
}

// cmdEnv is the environment of every subprocess: the test's own, without
// anything of mutual's that would change what a command does.
func cmdEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MUTUAL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// run runs a program to completion and returns what it printed and its exit
// code; it fails the test only if the program cannot be run at all.
func run(t testing.TB, env []string, name string, args ...string) result {
	t.Helper()
	r, err := runE(env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runE is run for goroutines other than the test's: it reports instead of
// failing the test.
func runE(env []string, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), safetyNet)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return r, fmt.Errorf("%s %s: still running after %s (safety net); stderr:\n%s", name, strings.Join(args, " "), safetyNet, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r, nil
}

func mutual(t testing.TB, args ...string) result {
	t.Helper()
	return run(t, cmdEnv(), mutualBin, args...)
}

// mustMutual runs mutual and fails the test unless it exits 0; it returns
// the standard output.
func mustMutual(t testing.TB, args ...string) string {
	t.Helper()
	r := mutual(t, args...)
	if r.code != 0 {
		t.Fatalf("mutual %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// mustMutualJSON runs mutual (with --json among args) and decodes its output.
func mustMutualJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := mustMutual(t, args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("mutual %s: output is not the expected JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// mustFail runs mutual and checks the error contract: exit 1, nothing on
// stdout, exactly one line "mutual: ..." on stderr, which contains every one
// of want (case-insensitively). It returns that line.
// tokenFile writes a join token where `--token-file` reads it, as the docs
// say to give one (on the command line it is in every user's process list,
// and the CLI warns).
func tokenFile(t *testing.T, tok string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustFail(t *testing.T, want []string, args ...string) string {
	t.Helper()
	r := mutual(t, args...)
	return checkOneLineError(t, "mutual "+strings.Join(args, " "), r, want...)
}

func checkOneLineError(t *testing.T, what string, r result, want ...string) string {
	t.Helper()
	if r.code != 1 {
		t.Errorf("%s: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
		return ""
	}
	if r.stdout != "" {
		t.Errorf("%s: printed on stdout although it failed:\n%s", what, r.stdout)
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	if line == "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, "mutual: ") {
		t.Errorf("%s: stderr is not one line \"mutual: ...\":\n%s", what, r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(strings.ToLower(line), strings.ToLower(w)) {
			t.Errorf("%s: error %q does not mention %q", what, line, w)
		}
	}
	return line
}

// needTool returns the path of an external program the test relies on. A
// missing tool skips the test on a developer's machine and fails it in CI.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not found (%v); install it to run this test", name, err)
	}
	return p
}

// ---------------------------------------------------------------------------
// CAs and CA services

// writePassphrase writes a passphrase file (mode 0600) and returns its path.
func writePassphrase(t *testing.T, dir, name, pass string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// initCA runs `mutual ca init` in a fresh directory and returns the CA
// directory and its passphrase file.
func initCA(t *testing.T, trustDomain string, extra ...string) (caDir, passFile string) {
	t.Helper()
	tmp := t.TempDir()
	passFile = writePassphrase(t, tmp, "pass", testPassphrase)
	caDir = filepath.Join(tmp, "ca")
	mustMutual(t, append([]string{"ca", "init", "--dir", caDir, "--trust-domain", trustDomain, "--passphrase-file", passFile}, extra...)...)
	return caDir, passFile
}

// freeAddr returns a loopback address reserved for t that a child binds
// later (see testport).
func freeAddr(t testing.TB) string {
	t.Helper()
	return testport.Addr(t)
}

// proc is a long-running subprocess (a CA service, a replica, mutual dev);
// it is killed when the test ends if still running.
type proc struct {
	cmd    *exec.Cmd
	stderr *testlog.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, once done is closed
}

func startProc(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &testlog.Buffer{}, done: make(chan struct{})}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// interrupt sends SIGINT (Ctrl-C) and checks that the process exits 0.
func (p *proc) interrupt(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGINT)
}

// signal sends sig and checks that the process exits 0.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v: %v", sig, err)
	}
	select {
	case <-p.done:
	case <-time.After(safetyNet):
		t.Fatalf("%s still running %s after %v; stderr:\n%s", p.cmd.Args[1], safetyNet, sig, p.stderr)
	}
	if p.err != nil {
		t.Fatalf("%s after %v: %v (want exit 0); stderr:\n%s", p.cmd.Args[1], sig, p.err, p.stderr)
	}
}

// caServer is a running `mutual server`.
type caServer struct {
	*proc
	url     string // https://127.0.0.1:PORT, where it listens
	metrics string // host:port of /metrics, when asked for
}

type serverOptions struct {
	listen  string // --listen; empty means a free loopback port
	store   string // --store
	metrics bool   // serve --metrics on a free port
	urls    []string
}

// startServer runs `mutual server` for caDir on a free loopback port and
// waits until GET /healthz answers 200 over TLS verified against the CA's
// bundle.
func startServer(t *testing.T, caDir, passFile string, o serverOptions) *caServer {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s, inUse := tryStartServer(t, caDir, passFile, o)
		if s != nil {
			return s
		}
		if !inUse || attempt == 3 || o.listen != "" {
			t.Fatal("the CA service did not start")
		}
		// Another process took the port between freeAddr and the
		// server's bind: pick another.
	}
}

func tryStartServer(t *testing.T, caDir, passFile string, o serverOptions) (*caServer, bool) {
	t.Helper()
	addr := o.listen
	if addr == "" {
		addr = freeAddr(t)
	}
	args := []string{"server", "--dir", caDir, "--passphrase-file", passFile, "--listen", addr}
	if o.store != "" {
		args = append(args, "--store", o.store)
	}
	var metrics string
	if o.metrics {
		metrics = freeAddr(t)
		args = append(args, "--metrics", metrics)
	}
	for _, u := range o.urls {
		args = append(args, "--url", u)
	}
	cmd := exec.Command(mutualBin, args...)
	cmd.Env = cmdEnv()
	s := &caServer{proc: startProc(t, cmd), url: "https://" + addr, metrics: metrics}

	hc := httpClient(t, filepath.Join(caDir, "bundle.pem"), nil)
	deadline := time.Now().Add(safetyNet)
	for {
		if s.exited() {
			log := s.stderr.String()
			if strings.Contains(log, "address already in use") {
				return nil, true
			}
			t.Errorf("mutual %s exited before it served: %v; stderr:\n%s", strings.Join(args, " "), s.err, log)
			return nil, false
		}
		resp, err := hc.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("GET %s/healthz not 200 after %s (last: %v); stderr:\n%s", s.url, safetyNet, err, s.stderr)
			return nil, false
		}
		time.Sleep(50 * time.Millisecond)
	}
	hc.CloseIdleConnections()

	// The service announced itself on stderr, as JSON log lines.
	wantURL := s.url
	if len(o.urls) > 0 {
		wantURL = o.urls[0]
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(s.stderr.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Errorf("server log line is not JSON: %q", line)
			continue
		}
		if ev["msg"] == "CA service listening" {
			found = true
			if ev["url"] != wantURL {
				t.Errorf("\"CA service listening\" url = %v, want %s", ev["url"], wantURL)
			}
		}
	}
	if !found {
		t.Errorf("no \"CA service listening\" line in the server log:\n%s", s.stderr)
	}
	return s, false
}

// stop interrupts the server and checks that it stopped cleanly.
func (s *caServer) stop(t *testing.T) {
	t.Helper()
	s.stopWith(t, syscall.SIGINT)
}

// stopWith stops the server with sig and checks that it stopped cleanly.
func (s *caServer) stopWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	s.signal(t, sig)
	if !strings.Contains(s.stderr.String(), `"msg":"CA service stopped"`) {
		t.Errorf("no \"CA service stopped\" log line after SIGINT:\n%s", s.stderr)
	}
}

// httpClient trusts the roots in bundleFile and presents cert if not nil.
func httpClient(t *testing.T, bundleFile string, cert *tls.Certificate) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", bundleFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
}

// createToken asks the CA for a join token and checks it is printed alone.
func createToken(t *testing.T, s *caServer, adminDir, id string, extra ...string) string {
	t.Helper()
	out := mustMutual(t, append([]string{"token", "create", "--server", s.url, "--identity-dir", adminDir, "--identity", id}, extra...)...)
	tok := strings.TrimSuffix(out, "\n")
	if !regexp.MustCompile(`^mutual1\.[A-Za-z0-9_-]+$`).MatchString(tok) {
		t.Fatalf("token create printed %q, want the token alone on one line", out)
	}
	return tok
}

// issued is the --json output of cert request and cert renew.
type issued struct {
	Dir       string    `json:"dir"`
	SPIFFEID  string    `json:"spiffe_id"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DNSNames  []string  `json:"dns_names"`
}

func requestCert(t *testing.T, tok, out string, extra ...string) issued {
	t.Helper()
	var is issued
	mustMutualJSON(t, &is, append([]string{"cert", "request", "--token-file", tokenFile(t, tok), "--out", out, "--json"}, extra...)...)
	return is
}

// certList is the --json output of cert list.
type certList struct {
	Certificates []struct {
		Serial           string     `json:"serial"`
		SPIFFEID         string     `json:"spiffe_id"`
		RevokedAt        *time.Time `json:"revoked_at"`
		RevocationReason string     `json:"revocation_reason"`
		RequestedBy      string     `json:"requested_by"`
	} `json:"certificates"`
}

func listCerts(t *testing.T, s *caServer, adminDir string, extra ...string) certList {
	t.Helper()
	var l certList
	mustMutualJSON(t, &l, append([]string{"cert", "list", "--server", s.url, "--identity-dir", adminDir, "--json"}, extra...)...)
	return l
}

// ---------------------------------------------------------------------------
// Files

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// leafOf parses the first certificate of a PEM file.
func leafOf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(readFile(t, path))
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s does not start with a PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// sameSerial compares a serial as mutual prints it with a certificate's.
func sameSerial(s string, n *big.Int) bool {
	v, ok := new(big.Int).SetString(strings.ReplaceAll(s, ":", ""), 16)
	return ok && v.Cmp(n) == 0
}

// checkKeyFile checks the contract for private key files: PKCS#8 PEM (CA
// keys encrypted), mode 0600.
func checkKeyFile(t *testing.T, path string, encrypted bool) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("%s has mode %#o, want 0600", path, m)
	}
	want := "-----BEGIN PRIVATE KEY-----"
	if encrypted {
		want = "-----BEGIN ENCRYPTED PRIVATE KEY-----"
	}
	if b := readFile(t, path); !bytes.HasPrefix(b, []byte(want)) {
		t.Errorf("%s does not start with %q", path, want)
	}
}

// snapshot maps every file under dir to its mode and contents.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 { // identity directories are links through ..data to a set
			target, err := os.Readlink(p)
			m[p] = "-> " + target
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		m[p] = fmt.Sprintf("%v %x", info.Mode(), sha256.Sum256(b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkKept checks that every file of before is still there, unchanged.
func checkKept(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if w, ok := after[p]; !ok {
			t.Errorf("%s: %s disappeared", what, p)
		} else if w != v {
			t.Errorf("%s: %s changed (%s -> %s)", what, p, v, w)
		}
	}
}

// checkUnchanged checks that a directory is exactly as it was.
func checkUnchanged(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	checkKept(t, what, before, after)
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

func opensslVerify(t *testing.T, openssl, caDir, certFile string) {
	t.Helper()
	r := run(t, cmdEnv(), openssl, "verify", "-CAfile", filepath.Join(caDir, "bundle.pem"),
		"-untrusted", filepath.Join(caDir, "intermediate", "cert.pem"), certFile)
	if r.code != 0 || strings.TrimSpace(r.stdout) != certFile+": OK" {
		t.Errorf("openssl verify %s: exit %d\nstdout:\n%s\nstderr:\n%s", certFile, r.code, r.stdout, r.stderr)
	}
}

// ---------------------------------------------------------------------------
// 1. The operator's flow on the embedded SQLite store

func TestE2EOperatorFlowSQLite(t *testing.T) {
	openssl := needTool(t, "openssl")
	caDir, pass := initCA(t, "example.org")
	admin := filepath.Join(caDir, "admin")
	tmp := t.TempDir()
	db := filepath.Join(tmp, "state.db")
	srv := startServer(t, caDir, pass, serverOptions{store: "sqlite:" + db})
	if _, err := os.Stat(db); err != nil {
		t.Errorf("--store sqlite:%s: %v", db, err)
	}

	// Enroll a workload with a join token.
	const webID = "spiffe://example.org/ns/prod/web"
	tok := createToken(t, srv, admin, webID, "--dns", "web.internal", "--cert-ttl", "30m")
	web := filepath.Join(tmp, "web")
	first := requestCert(t, tok, web)
	if first.SPIFFEID != webID {
		t.Errorf("cert request: spiffe_id %q, want %q", first.SPIFFEID, webID)
	}
	if !slices.Contains(first.DNSNames, "web.internal") {
		t.Errorf("cert request: dns_names %v, want web.internal (the token's --dns)", first.DNSNames)
	}
	if now := time.Now(); first.NotAfter.After(now.Add(45*time.Minute)) || first.NotAfter.Before(now.Add(15*time.Minute)) {
		t.Errorf("cert request: not_after %s, want about 30m from now (the token's --cert-ttl)", first.NotAfter)
	}
	leaf := leafOf(t, filepath.Join(web, "cert.pem"))
	if !sameSerial(first.Serial, leaf.SerialNumber) {
		t.Errorf("cert request printed serial %s, cert.pem has %x", first.Serial, leaf.SerialNumber)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != webID {
		t.Errorf("cert.pem URI SANs %v, want exactly %s", leaf.URIs, webID)
	}
	if !bytes.Equal(readFile(t, filepath.Join(web, "bundle.pem")), readFile(t, filepath.Join(caDir, "bundle.pem"))) {
		t.Errorf("%s/bundle.pem differs from the CA's bundle.pem", web)
	}

	// openssl, knowing nothing of mutual, verifies the chain and reads the
	// encrypted CA keys with the passphrase, and only with it.
	opensslVerify(t, openssl, caDir, filepath.Join(web, "cert.pem"))
	for _, key := range []string{"intermediate/key.pem", "root/key.pem"} {
		p := filepath.Join(caDir, key)
		if r := run(t, cmdEnv(), openssl, "pkey", "-in", p, "-passin", "file:"+pass, "-noout"); r.code != 0 {
			t.Errorf("openssl pkey -in %s with the passphrase: exit %d\n%s", key, r.code, r.stderr)
		}
		if r := run(t, cmdEnv(), openssl, "pkey", "-in", p, "-passin", "pass:not the passphrase", "-noout"); r.code == 0 {
			t.Errorf("openssl pkey -in %s with a wrong passphrase succeeded: the key is not encrypted", key)
		}
	}
	checkKeyFile(t, filepath.Join(caDir, "root", "key.pem"), true)
	checkKeyFile(t, filepath.Join(caDir, "intermediate", "key.pem"), true)
	checkKeyFile(t, filepath.Join(caDir, "admin", "key.pem"), false)
	checkKeyFile(t, filepath.Join(caDir, "server", "key.pem"), false)
	checkKeyFile(t, filepath.Join(web, "key.pem"), false)

	// Renewal: a new serial and a fresh key, files still 0600.
	var renewed issued
	mustMutualJSON(t, &renewed, "cert", "renew", "--dir", web, "--server", srv.url, "--json")
	if renewed.SPIFFEID != webID {
		t.Errorf("cert renew: spiffe_id %q, want %q", renewed.SPIFFEID, webID)
	}
	if renewed.Serial == first.Serial {
		t.Errorf("cert renew kept the serial %s", first.Serial)
	}
	leaf2 := leafOf(t, filepath.Join(web, "cert.pem"))
	if !sameSerial(renewed.Serial, leaf2.SerialNumber) {
		t.Errorf("cert renew printed serial %s, cert.pem has %x", renewed.Serial, leaf2.SerialNumber)
	}
	if bytes.Equal(leaf.RawSubjectPublicKeyInfo, leaf2.RawSubjectPublicKeyInfo) {
		t.Error("cert renew kept the old key; every renewal must make a fresh one")
	}
	checkKeyFile(t, filepath.Join(web, "key.pem"), false)
	opensslVerify(t, openssl, caDir, filepath.Join(web, "cert.pem"))

	// A join token is single use.
	web2 := filepath.Join(tmp, "web2")
	mustFail(t, []string{"already used"}, "cert", "request", "--token-file", tokenFile(t, tok), "--out", web2)
	if _, err := os.Stat(filepath.Join(web2, "cert.pem")); err == nil {
		t.Errorf("a refused enrollment wrote %s/cert.pem", web2)
	}
	var tokens struct {
		Tokens []struct {
			SPIFFEID   string     `json:"spiffe_id"`
			UsedAt     *time.Time `json:"used_at"`
			UsedSerial string     `json:"used_serial"`
		} `json:"tokens"`
	}
	// No --server: the service recorded its address in the admin directory.
	mustMutualJSON(t, &tokens, "token", "list", "--identity-dir", admin, "--json")
	if len(tokens.Tokens) != 1 || tokens.Tokens[0].UsedAt == nil || tokens.Tokens[0].UsedSerial != first.Serial {
		t.Errorf("token list: %+v, want the one token, used for serial %s", tokens.Tokens, first.Serial)
	}

	// Single use holds when several clients race with one token: exactly
	// one enrolls.
	raceTok := createToken(t, srv, admin, "spiffe://example.org/ns/prod/race")
	raceFile := tokenFile(t, raceTok)
	const racers = 6
	results := make([]result, racers)
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = runE(cmdEnv(), mutualBin, "cert", "request", "--token-file", raceFile, "--out", filepath.Join(tmp, fmt.Sprintf("race%d", i)))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	won := 0
	for i, r := range results {
		if r.code == 0 {
			won++
			continue
		}
		checkOneLineError(t, fmt.Sprintf("racing cert request %d", i), r, "already used")
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent enrollments with one token succeeded, want exactly 1", won, racers)
	}

	// Revoke the current certificate by serial, written the way openssl
	// prints it (upper case) with colons, as the help allows.
	colons := strings.ToUpper(renewed.Serial)
	if len(colons)%2 == 1 {
		colons = "0" + colons
	}
	var parts []string
	for i := 0; i < len(colons); i += 2 {
		parts = append(parts, colons[i:i+2])
	}
	colons = strings.Join(parts, ":")
	out := mustMutual(t, "cert", "revoke", "--server", srv.url, "--identity-dir", admin, "--serial", colons, "--reason", "keyCompromise")
	if !strings.Contains(out, renewed.Serial) || !strings.Contains(out, "revoked") || strings.Contains(out, "already") {
		t.Errorf("cert revoke --serial %s printed %q", colons, out)
	}
	out = mustMutual(t, "cert", "revoke", "--server", srv.url, "--identity-dir", admin, "--serial", renewed.Serial)
	if !strings.Contains(out, "already revoked") {
		t.Errorf("revoking twice printed %q, want \"already revoked\"", out)
	}

	// A revoked certificate cannot renew, and the refusal leaves the
	// identity directory as it was.
	before := snapshot(t, web)
	mustFail(t, []string{"revoked"}, "cert", "renew", "--dir", web, "--server", srv.url)
	checkUnchanged(t, "refused renewal", before, snapshot(t, web))

	checkRevoked := func(what string, l certList) {
		t.Helper()
		var sawRevoked, sawFirst bool
		for _, c := range l.Certificates {
			switch c.Serial {
			case renewed.Serial:
				sawRevoked = true
				if c.RevokedAt == nil || c.RevocationReason != "keyCompromise" {
					t.Errorf("%s: cert list: %s revoked_at %v reason %q, want a time and keyCompromise", what, c.Serial, c.RevokedAt, c.RevocationReason)
				}
			case first.Serial:
				sawFirst = true
				if c.RevokedAt != nil {
					t.Errorf("%s: cert list: %s (never revoked) has revoked_at %v", what, c.Serial, c.RevokedAt)
				}
			}
		}
		if !sawRevoked || !sawFirst {
			t.Errorf("%s: cert list lacks %s or %s: %+v", what, renewed.Serial, first.Serial, l.Certificates)
		}
	}
	checkRevoked("after revoke", listCerts(t, srv, admin))

	// Revoke every unexpired certificate of an identity.
	const apiID = "spiffe://example.org/ns/prod/api"
	apiDir := filepath.Join(tmp, "api")
	a1 := requestCert(t, createToken(t, srv, admin, apiID), apiDir)
	var a2 issued
	mustMutualJSON(t, &a2, "cert", "renew", "--dir", apiDir, "--json")
	var rev struct {
		Revoked []struct {
			Serial   string `json:"serial"`
			SPIFFEID string `json:"spiffe_id"`
		} `json:"revoked"`
	}
	mustMutualJSON(t, &rev, "cert", "revoke", "--server", srv.url, "--identity-dir", admin, "--identity", apiID, "--json")
	var got []string
	for _, r := range rev.Revoked {
		got = append(got, r.Serial)
		if r.SPIFFEID != apiID {
			t.Errorf("cert revoke --identity %s revoked %s of %s", apiID, r.Serial, r.SPIFFEID)
		}
	}
	slices.Sort(got)
	want := []string{a1.Serial, a2.Serial}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("cert revoke --identity revoked %v, want %v", got, want)
	}
	for _, c := range listCerts(t, srv, admin, "--identity", apiID).Certificates {
		if c.SPIFFEID != apiID {
			t.Errorf("cert list --identity %s listed %s", apiID, c.SPIFFEID)
		}
		if c.RevokedAt == nil {
			t.Errorf("cert list: %s still not revoked after revoke --identity", c.Serial)
		}
	}
	mustFail(t, []string{"revoked"}, "cert", "renew", "--dir", apiDir)

	// A serial this CA never issued.
	mustFail(t, []string{"not issued by this CA"}, "cert", "revoke", "--server", srv.url, "--identity-dir", admin, "--serial", "0123456789abcdef0123")

	srv.stop(t)

	// Nothing is lost across a restart on the same store (and address: the
	// used token names it).
	srv = startServer(t, caDir, pass, serverOptions{store: "sqlite:" + db, listen: strings.TrimPrefix(srv.url, "https://")})
	checkRevoked("after a restart", listCerts(t, srv, admin))
	mustFail(t, []string{"already used"}, "cert", "request", "--token-file", tokenFile(t, tok), "--out", web2)
	mustFail(t, []string{"revoked"}, "cert", "renew", "--dir", web, "--server", srv.url)
	srv.stop(t)

	// After a clean stop the store is its one file: a copy of it (the
	// operator's backup) still knows every revocation.
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(backup, readFile(t, db), 0o600); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, caDir, pass, serverOptions{store: "sqlite:" + backup})
	checkRevoked("on a copy of the store file made after a clean stop", listCerts(t, srv, admin))
	srv.stop(t)
}

// ---------------------------------------------------------------------------
// 2. curl as an independent client of the HTTPS JSON API

func TestE2ECurl(t *testing.T) {
	curl := needTool(t, "curl")
	caDir, pass := initCA(t, "example.org")
	srv := startServer(t, caDir, pass, serverOptions{metrics: true})
	admin := filepath.Join(caDir, "admin")
	work := filepath.Join(t.TempDir(), "work")
	requestCert(t, createToken(t, srv, admin, "spiffe://example.org/ns/prod/web"), work)
	bundle := filepath.Join(caDir, "bundle.pem")

	// curlJSON fetches url and returns the status and the decoded body.
	curlJSON := func(t *testing.T, url string, args ...string) (int, map[string]any) {
		t.Helper()
		body := filepath.Join(t.TempDir(), "body")
		full := append([]string{"-sS", "--max-time", "30", "-o", body, "-w", "%{http_code} %{content_type}"}, args...)
		r := run(t, cmdEnv(), curl, append(full, url)...)
		if r.code != 0 {
			t.Fatalf("curl %s: exit %d\n%s", url, r.code, r.stderr)
		}
		var status int
		var ctype string
		if _, err := fmt.Sscan(r.stdout, &status, &ctype); err != nil {
			t.Fatalf("curl -w printed %q: %v", r.stdout, err)
		}
		b := readFile(t, body)
		var v map[string]any
		if strings.HasPrefix(ctype, "application/json") {
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %d answer is not JSON: %v\n%s", url, status, err, b)
			}
		}
		return status, v
	}

	tests := []struct {
		name       string
		path       string
		args       []string
		wantStatus int
		wantCode   string
	}{
		{"admin lists tokens", "/v1/tokens",
			[]string{"--cacert", bundle, "--cert", filepath.Join(admin, "cert.pem"), "--key", filepath.Join(admin, "key.pem")}, 200, ""},
		{"admin lists certificates", "/v1/certificates",
			[]string{"--cacert", bundle, "--cert", filepath.Join(admin, "cert.pem"), "--key", filepath.Join(admin, "key.pem")}, 200, ""},
		{"no client certificate", "/v1/tokens", []string{"--cacert", bundle}, 401, "admin_required"},
		{"workload certificate", "/v1/tokens",
			[]string{"--cacert", bundle, "--cert", filepath.Join(work, "cert.pem"), "--key", filepath.Join(work, "key.pem")}, 403, "admin_required"},
		{"bundle is public", "/v1/bundle", []string{"--cacert", bundle}, 200, ""},
		{"health", "/healthz", []string{"--cacert", bundle}, 200, ""},
		{"unknown endpoint", "/v2/nothing", []string{"--cacert", bundle}, 404, "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := curlJSON(t, srv.url+tc.path, tc.args...)
			if status != tc.wantStatus {
				t.Errorf("GET %s: status %d, want %d; body %v", tc.path, status, tc.wantStatus, body)
			}
			if body == nil {
				t.Fatalf("GET %s: no JSON body", tc.path)
			}
			if tc.wantCode != "" {
				if body["code"] != tc.wantCode {
					t.Errorf("GET %s: code %v, want %s", tc.path, body["code"], tc.wantCode)
				}
				if msg, _ := body["error"].(string); msg == "" {
					t.Errorf("GET %s: no \"error\" message in %v", tc.path, body)
				}
			}
			switch tc.path {
			case "/v1/tokens":
				if status == 200 {
					if ts, ok := body["tokens"].([]any); !ok || len(ts) != 1 {
						t.Errorf("GET /v1/tokens: tokens %v, want the one token made", body["tokens"])
					}
				}
			case "/v1/bundle":
				root := leafOf(t, bundle)
				fp := sha256.Sum256(root.Raw)
				if body["root_fingerprint"] != hex.EncodeToString(fp[:]) || body["trust_domain"] != "example.org" {
					t.Errorf("GET /v1/bundle: %v, want trust domain example.org and root fingerprint %x", body, fp)
				}
			}
		})
	}

	t.Run("metrics", func(t *testing.T) {
		r := run(t, cmdEnv(), curl, "-sS", "--max-time", "30", "-f", "http://"+srv.metrics+"/metrics")
		if r.code != 0 {
			t.Fatalf("curl /metrics: exit %d\n%s", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "mutual_ca_certificates_issued_total") {
			t.Errorf("/metrics lacks mutual_ca_certificates_issued_total:\n%s", r.stdout)
		}
	})
	// What a service manager sends stops it cleanly too.
	srv.stopWith(t, syscall.SIGTERM)
}

// ---------------------------------------------------------------------------
// 3. Bad input: one clear line, exit 1, nothing already stored lost

func TestE2EBadInput(t *testing.T) {
	caDir, pass := initCA(t, "example.org")
	tmp := t.TempDir()
	empty := filepath.Join(tmp, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	wrongPass := writePassphrase(t, tmp, "wrong", "not the passphrase")
	caBefore := snapshot(t, caDir)

	// A directory holding part of a CA (a key someone cares about).
	half := filepath.Join(tmp, "half")
	if err := os.MkdirAll(filepath.Join(half, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "root", "key.pem"), []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	halfBefore := snapshot(t, half)

	t.Run("ca init", func(t *testing.T) {
		newDir := filepath.Join(tmp, "new-ca")
		tests := []struct {
			name string
			args []string
			want []string
		}{
			{"missing passphrase file",
				[]string{"--dir", newDir, "--trust-domain", "example.org", "--passphrase-file", filepath.Join(tmp, "nope")},
				[]string{"--passphrase-file", "does not exist"}},
			{"empty passphrase file",
				[]string{"--dir", newDir, "--trust-domain", "example.org", "--passphrase-file", empty},
				[]string{"--passphrase-file", "empty"}},
			{"no passphrase file",
				[]string{"--dir", newDir, "--trust-domain", "example.org"},
				[]string{"--passphrase-file", "required"}},
			{"existing CA",
				[]string{"--dir", caDir, "--trust-domain", "example.org", "--passphrase-file", pass},
				[]string{"already exists"}},
			{"directory holding part of a CA",
				[]string{"--dir", half, "--trust-domain", "example.org", "--passphrase-file", pass},
				[]string{"already exists"}},
			{"existing CA, other trust domain and key type",
				[]string{"--dir", caDir, "--trust-domain", "other.org", "--passphrase-file", pass, "--key-type", "rsa-3072"},
				[]string{"already exists"}},
			{"bad trust domain",
				[]string{"--dir", newDir, "--trust-domain", "Not A Domain!", "--passphrase-file", pass},
				[]string{"--trust-domain"}},
			{"bad key type",
				[]string{"--dir", newDir, "--trust-domain", "example.org", "--passphrase-file", pass, "--key-type", "dsa-1024"},
				[]string{"--key-type", "dsa-1024"}},
			{"no trust domain",
				[]string{"--dir", newDir, "--passphrase-file", pass},
				[]string{"--trust-domain", "required"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				mustFail(t, tc.want, append([]string{"ca", "init"}, tc.args...)...)
				if _, err := os.Stat(newDir); err == nil {
					t.Errorf("a refused ca init left %s behind", newDir)
					os.RemoveAll(newDir)
				}
				checkUnchanged(t, "refused ca init", caBefore, snapshot(t, caDir))
				checkUnchanged(t, "refused ca init", halfBefore, snapshot(t, half))
			})
		}
	})

	t.Run("server with the wrong passphrase", func(t *testing.T) {
		mustFail(t, []string{"wrong passphrase"}, "server", "--dir", caDir, "--passphrase-file", wrongPass, "--listen", freeAddr(t))
		checkUnchanged(t, "refused server start", caBefore, snapshot(t, caDir))
	})

	t.Run("inspect", func(t *testing.T) {
		good := readFile(t, filepath.Join(caDir, "admin", "cert.pem"))
		tests := []struct {
			name    string
			content string
			want    []string
		}{
			{"garbage inside PEM armour", "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n", []string{"malformed certificate"}},
			{"not PEM", "hello, world\n", []string{"no PEM certificate"}},
			{"truncated PEM", string(good[:len(good)/3]), []string{"no PEM certificate"}},
			{"empty file", "", []string{"no PEM certificate"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "bad.pem")
				if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
				line := mustFail(t, tc.want, "inspect", p)
				if !strings.Contains(line, p) {
					t.Errorf("inspect error %q does not name the file %s", line, p)
				}
			})
		}
	})

	// A running CA for the enrollment cases.
	srv := startServer(t, caDir, pass, serverOptions{})
	admin := filepath.Join(caDir, "admin")

	t.Run("cert request", func(t *testing.T) {
		existing := filepath.Join(tmp, "existing")
		requestCert(t, createToken(t, srv, admin, "spiffe://example.org/existing"), existing)
		existingBefore := snapshot(t, existing)
		unused := createToken(t, srv, admin, "spiffe://example.org/unused")

		// A second CA whose service writes the first CA's address into its
		// tokens: its tokens carry its own root fingerprint, but lead to a
		// server that cannot present that root.
		otherDir, otherPass := initCA(t, "other.org")
		other := startServer(t, otherDir, otherPass, serverOptions{urls: []string{srv.url}})
		foreign := createToken(t, other, filepath.Join(otherDir, "admin"), "spiffe://other.org/web")

		tests := []struct {
			name string
			args []string
			want []string
		}{
			{"malformed token", []string{"--token-file", tokenFile(t, "mutual1.garbage")}, []string{"malformed join token"}},
			{"not a token", []string{"--token-file", tokenFile(t, "hello")}, []string{"malformed join token", "mutual1."}},
			{"truncated token", []string{"--token-file", tokenFile(t, unused[:len(unused)-10])}, []string{"malformed join token"}},
			{"token of another CA", []string{"--token-file", tokenFile(t, foreign)}, []string{"another CA"}},
			{"no token", nil, []string{"--token", "required"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				mustFail(t, tc.want, append([]string{"cert", "request", "--out", out}, tc.args...)...)
				if _, err := os.Stat(filepath.Join(out, "cert.pem")); err == nil {
					t.Errorf("a refused enrollment wrote %s/cert.pem", out)
				}
			})
		}

		t.Run("identity already in --out", func(t *testing.T) {
			mustFail(t, []string{"already holds an identity", "--force"}, "cert", "request", "--token-file", tokenFile(t, unused), "--out", existing)
			checkUnchanged(t, "refused cert request", existingBefore, snapshot(t, existing))
			// The refusal did not spend the token.
			requestCert(t, unused, filepath.Join(t.TempDir(), "fresh"))
		})
		other.stop(t)
	})

	t.Run("token create", func(t *testing.T) {
		countTokens := func() int {
			var l struct {
				Tokens []json.RawMessage `json:"tokens"`
			}
			mustMutualJSON(t, &l, "token", "list", "--server", srv.url, "--identity-dir", admin, "--json")
			return len(l.Tokens)
		}
		before := countTokens()
		base := []string{"token", "create", "--server", srv.url, "--identity-dir", admin}
		tests := []struct {
			name string
			args []string
			want []string
		}{
			{"not a SPIFFE ID", []string{"--identity", "web"}, []string{"--identity", "not a SPIFFE ID"}},
			{"other trust domain", []string{"--identity", "spiffe://other.org/web"}, []string{"other.org", "example.org"}},
			{"certificate lifetime over the policy", []string{"--identity", "spiffe://example.org/web", "--cert-ttl", "48h"}, []string{"exceeds"}},
			{"token lifetime over the policy", []string{"--identity", "spiffe://example.org/web", "--ttl", "200h"}, []string{"exceeds"}},
			{"negative token lifetime", []string{"--identity", "spiffe://example.org/web", "--ttl", "-5m"}, []string{"positive"}},
			{"bad DNS name", []string{"--identity", "spiffe://example.org/web", "--dns", "bad name!"}, []string{"bad name!"}},
			{"bad IP address", []string{"--identity", "spiffe://example.org/web", "--ip", "300.1.1.1"}, []string{"300.1.1.1"}},
			{"no admin identity", []string{"--identity", "spiffe://example.org/web", "--identity-dir", filepath.Join(tmp, "nope")}, []string{"--identity-dir"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				mustFail(t, tc.want, append(slices.Clone(base), tc.args...)...)
			})
		}
		if after := countTokens(); after != before {
			t.Errorf("refused token creations stored %d tokens", after-before)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		base := []string{"cert", "revoke", "--server", srv.url, "--identity-dir", admin}
		mustFail(t, []string{"--serial"}, append(base, "--serial", "not-hex")...)
		mustFail(t, []string{"--serial", "--identity"}, base...)
		mustFail(t, []string{"--reason"}, append(base, "--serial", "01", "--reason", "boredom")...)
	})

	srv.stop(t)
	// The CA's own files came through all of it (the service adds its store
	// and admin/mutual.json beside them).
	checkKept(t, "CA directory", caBefore, snapshot(t, caDir))
}

// ---------------------------------------------------------------------------
// Operator identities issued offline with ca admin, while the service runs

func TestE2ECAAdmin(t *testing.T) {
	caDir, pass := initCA(t, "example.org")
	srv := startServer(t, caDir, pass, serverOptions{})
	tmp := t.TempDir()
	alice := filepath.Join(tmp, "alice")

	var is issued
	mustMutualJSON(t, &is, "ca", "admin", "--dir", caDir, "--passphrase-file", pass, "--name", "alice", "--out", alice, "--json")
	if is.SPIFFEID != "spiffe://example.org/admin/alice" {
		t.Errorf("ca admin: spiffe_id %q", is.SPIFFEID)
	}
	checkKeyFile(t, filepath.Join(alice, "key.pem"), false)

	// The running service knows alice at once: she is an admin.
	l := listCerts(t, srv, alice, "--identity", "spiffe://example.org/admin/alice")
	if len(l.Certificates) != 1 || l.Certificates[0].Serial != is.Serial || l.Certificates[0].RequestedBy != "ca-admin" {
		t.Errorf("cert list as alice: %+v, want her certificate %s requested by ca-admin", l.Certificates, is.Serial)
	}
	createToken(t, srv, alice, "spiffe://example.org/ns/prod/web")

	// Refusals leave alice's directory as it was.
	before := snapshot(t, alice)
	mustFail(t, []string{"already holds an identity"}, "ca", "admin", "--dir", caDir, "--passphrase-file", pass, "--name", "alice", "--out", alice)
	wrong := writePassphrase(t, tmp, "wrong", "not the passphrase")
	mustFail(t, []string{"wrong passphrase"}, "ca", "admin", "--dir", caDir, "--passphrase-file", wrong, "--name", "bob", "--out", filepath.Join(tmp, "bob"))
	mustFail(t, []string{"--name"}, "ca", "admin", "--dir", caDir, "--passphrase-file", pass, "--name", "a/b", "--out", filepath.Join(tmp, "ab"))
	checkUnchanged(t, "refused ca admin", before, snapshot(t, alice))

	// Revoked, alice is an admin no more.
	mustMutual(t, "cert", "revoke", "--server", srv.url, "--identity-dir", filepath.Join(caDir, "admin"), "--identity", "spiffe://example.org/admin/alice")
	mustFail(t, []string{"revoked"}, "token", "list", "--server", srv.url, "--identity-dir", alice)
	srv.stop(t)
}

// ---------------------------------------------------------------------------
// 4. Every key type

func TestE2EKeyTypes(t *testing.T) {
	openssl := needTool(t, "openssl")
	tests := []struct {
		keyType string
		check   func(any) bool
	}{
		{"ecdsa-p256", func(k any) bool { e, ok := k.(*ecdsa.PublicKey); return ok && e.Curve == elliptic.P256() }},
		{"ecdsa-p384", func(k any) bool { e, ok := k.(*ecdsa.PublicKey); return ok && e.Curve == elliptic.P384() }},
		{"ed25519", func(k any) bool { _, ok := k.(ed25519.PublicKey); return ok }},
		{"rsa-3072", func(k any) bool { r, ok := k.(*rsa.PublicKey); return ok && r.N.BitLen() == 3072 }},
	}
	for _, tc := range tests {
		t.Run(tc.keyType, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			pass := writePassphrase(t, tmp, "pass", testPassphrase)
			caDir := filepath.Join(tmp, "ca")
			var res struct {
				TrustDomain     string `json:"trust_domain"`
				RootFingerprint string `json:"root_fingerprint"`
				AdminID         string `json:"admin_id"`
				AdminDir        string `json:"admin_dir"`
			}
			mustMutualJSON(t, &res, "ca", "init", "--dir", caDir, "--trust-domain", "keys.example", "--passphrase-file", pass,
				"--key-type", tc.keyType, "--json")
			if res.TrustDomain != "keys.example" || res.AdminID != "spiffe://keys.example/admin/operator" {
				t.Errorf("ca init --json: %+v", res)
			}
			root := leafOf(t, filepath.Join(caDir, "bundle.pem"))
			if fp := sha256.Sum256(root.Raw); res.RootFingerprint != hex.EncodeToString(fp[:]) {
				t.Errorf("ca init printed root fingerprint %s, bundle.pem's root is %x", res.RootFingerprint, fp)
			}
			for _, f := range []string{"root/cert.pem", "intermediate/cert.pem", "admin/cert.pem", "server/cert.pem"} {
				if c := leafOf(t, filepath.Join(caDir, f)); !tc.check(c.PublicKey) {
					t.Errorf("%s: key %T, want %s", f, c.PublicKey, tc.keyType)
				}
			}
			opensslVerify(t, openssl, caDir, filepath.Join(caDir, "admin", "cert.pem"))
			opensslVerify(t, openssl, caDir, filepath.Join(caDir, "server", "cert.pem"))
			if r := run(t, cmdEnv(), openssl, "pkey", "-in", filepath.Join(caDir, "intermediate", "key.pem"), "-passin", "file:"+pass, "-noout"); r.code != 0 {
				t.Errorf("openssl pkey on the %s intermediate key: exit %d\n%s", tc.keyType, r.code, r.stderr)
			}
			checkKeyFile(t, filepath.Join(caDir, "intermediate", "key.pem"), true)
			checkKeyFile(t, filepath.Join(caDir, "admin", "key.pem"), false)

			// mutual inspect agrees: key matches, chain verifies.
			var rep struct {
				KeyMatches *bool `json:"key_matches"`
				Verified   *bool `json:"verified"`
			}
			mustMutualJSON(t, &rep, "inspect", filepath.Join(caDir, "admin"), "--json")
			if rep.KeyMatches == nil || !*rep.KeyMatches || rep.Verified == nil || !*rep.Verified {
				t.Errorf("inspect admin: key_matches %v verified %v, want true and true", rep.KeyMatches, rep.Verified)
			}

			// The CA serves and issues with this key type, to a workload
			// key of the same type.
			srv := startServer(t, caDir, pass, serverOptions{})
			work := filepath.Join(tmp, "work")
			requestCert(t, createToken(t, srv, filepath.Join(caDir, "admin"), "spiffe://keys.example/w"), work, "--key-type", tc.keyType)
			if c := leafOf(t, filepath.Join(work, "cert.pem")); !tc.check(c.PublicKey) {
				t.Errorf("workload certificate key %T, want %s", c.PublicKey, tc.keyType)
			}
			opensslVerify(t, openssl, caDir, filepath.Join(work, "cert.pem"))
			srv.stop(t)
		})
	}
}

// ---------------------------------------------------------------------------
// 5. mutual dev

func TestE2EDev(t *testing.T) {
	// mutual dev keeps its CA in a temporary directory removed on exit:
	// give it a TMPDIR of its own to check that.
	devTmp := t.TempDir()
	cmd := exec.Command(mutualBin, "dev")
	cmd.Env = cmdEnv("TMPDIR=" + devTmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, cmd)

	var (
		mu    sync.Mutex
		lines []string
	)
	lineCh := make(chan string, 64)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(lineCh)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			select {
			case lineCh <- sc.Text():
			default:
			}
		}
	}()
	printed := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(lines, "\n")
	}

	var tokLine string
	timeout := time.After(safetyNet)
	for tokLine == "" {
		select {
		case l, ok := <-lineCh:
			if !ok {
				t.Fatalf("mutual dev ended its output before printing a token (%v); stdout:\n%s\nstderr:\n%s", p.err, printed(), p.stderr)
			}
			if strings.Contains(l, "cert request --token") {
				tokLine = l
			}
		case <-timeout:
			t.Fatalf("mutual dev printed no token within %s; stdout:\n%s\nstderr:\n%s", safetyNet, printed(), p.stderr)
		}
	}
	tokFile := regexp.MustCompile(`--token-file (\S+)`).FindStringSubmatch(tokLine)
	if tokFile == nil {
		t.Fatalf("no --token-file in %q", tokLine)
	}

	out := filepath.Join(t.TempDir(), "web")
	enrolled := mustMutual(t, "cert", "request", "--token-file", tokFile[1], "--out", out)
	if first, _, _ := strings.Cut(enrolled, "\n"); first != "Enrolled spiffe://dev.mutual.test/ns/dev/hello" {
		t.Errorf("cert request printed %q first, want \"Enrolled spiffe://dev.mutual.test/ns/dev/hello\"", first)
	}
	if c := leafOf(t, filepath.Join(out, "cert.pem")); len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://dev.mutual.test/ns/dev/hello" {
		t.Errorf("dev certificate URIs %v", c.URIs)
	}

	// The next steps it prints work as printed: renew, and admin commands
	// that find the CA through the admin directory alone.
	mustMutual(t, "cert", "renew", "--dir", out)
	m := regexp.MustCompile(`admin identity\s+(\S+)`).FindStringSubmatch(printed())
	if m == nil {
		t.Errorf("mutual dev did not print its admin identity directory:\n%s", printed())
	} else {
		l := certList{}
		mustMutualJSON(t, &l, "cert", "list", "--identity-dir", m[1], "--identity", "spiffe://dev.mutual.test/ns/dev/hello", "--json")
		if len(l.Certificates) != 2 {
			t.Errorf("cert list of the dev CA: %d certificates for ns/dev/hello, want 2 (enrolled, renewed)", len(l.Certificates))
		}
	}

	p.interrupt(t)
	<-readDone
	if !strings.Contains(printed(), "stopped") {
		t.Errorf("mutual dev did not say it stopped; stdout:\n%s", printed())
	}
	left, err := os.ReadDir(devTmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("mutual dev left %s in its temporary directory", e.Name())
	}
}

// ---------------------------------------------------------------------------
// 6. --help everywhere

// subcommands reads the "Available Commands:" section of a help text.
func subcommands(help string) []string {
	_, rest, ok := strings.Cut(help, "Available Commands:\n")
	if !ok {
		return nil
	}
	var names []string
	for _, l := range strings.Split(rest, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			break
		}
		if f[0] != "help" {
			names = append(names, f[0])
		}
	}
	return names
}

func TestE2EHelp(t *testing.T) {
	// Walk the command tree as the help shows it, so new commands are
	// covered too.
	var all [][]string
	queue := [][]string{{}}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		all = append(all, path)
		for _, sub := range subcommands(mustMutual(t, append(slices.Clone(path), "--help")...)) {
			queue = append(queue, append(slices.Clone(path), sub))
		}
	}
	have := map[string]bool{}
	for _, p := range all {
		have[strings.Join(p, " ")] = true
	}
	for _, want := range []string{"ca", "ca init", "server", "token", "token create", "token list", "cert",
		"cert request", "cert renew", "cert revoke", "cert list", "inspect", "dev"} {
		if !have[want] {
			t.Errorf("mutual --help does not lead to %q", want)
		}
	}

	for _, path := range all {
		name := strings.Join(append([]string{"mutual"}, path...), " ")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, h := range []string{"--help", "-h"} {
				r := mutual(t, append(slices.Clone(path), h)...)
				if r.code != 0 {
					t.Errorf("%s %s: exit %d\n%s", name, h, r.code, r.stderr)
				}
				if !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, name) {
					t.Errorf("%s %s: stdout is not its help:\n%s", name, h, r.stdout)
				}
				if r.stderr != "" {
					t.Errorf("%s %s: wrote on stderr:\n%s", name, h, r.stderr)
				}
			}
			// Every flag's value placeholder is one word ("--dir string"):
			// back-quoted words in a flag's usage become its placeholder.
			r := mutual(t, append(slices.Clone(path), "--help")...)
			if _, flags, ok := strings.Cut(r.stdout, "Flags:\n"); ok {
				for _, l := range strings.Split(flags, "\n") {
					if strings.TrimSpace(l) == "" {
						break
					}
					head, _, _ := strings.Cut(strings.TrimSpace(l), "   ")
					f := strings.Fields(strings.TrimSpace(head))
					if len(f) > 0 && strings.HasSuffix(f[0], ",") {
						f = f[1:]
					}
					if len(f) > 2 {
						t.Errorf("%s --help shows the flag as %q: its value placeholder is several words", name, strings.Join(f, " "))
					}
				}
			}
			// An unknown flag is one clear line too.
			r = mutual(t, append(slices.Clone(path), "--no-such-flag")...)
			checkOneLineError(t, name+" --no-such-flag", r, "no-such-flag")
		})
	}
}
