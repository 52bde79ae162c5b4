package cli_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/cli"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testport"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// asMutual makes this test binary run as `mutual` when a test starts it as
// a child process (see startProcess): signals need a process of their own.
const asMutual = "MUTUAL_CLI_TEST_AS_MUTUAL"

func TestMain(m *testing.M) {
	if os.Getenv(asMutual) == "1" {
		os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// process is `mutual ARGS` running as a child process.
type process struct {
	cmd    *exec.Cmd
	stderr *testlog.Buffer
	exited chan struct{}
	err    error
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{stderr: &testlog.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], args...)
	p.cmd.Env = append(os.Environ(), asMutual+"=1")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitLog waits until the child's log holds s; it fails if the child exits.
func (p *process) waitLog(t *testing.T, s string) {
	t.Helper()
	testwait.Eventually(t, func() bool {
		select {
		case <-p.exited:
			t.Fatalf("mutual exited (%v) before logging %q:\n%s", p.err, s, p.stderr)
		default:
		}
		return strings.Contains(p.stderr.String(), s)
	}, "mutual to log "+s)
}

// hangUp sends SIGHUP and waits until the child logs that it got it.
func (p *process) hangUp(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "SIGHUP received")
	select {
	case <-p.exited:
		t.Fatalf("SIGHUP ended mutual (%v):\n%s", p.err, p.stderr)
	default:
	}
}

// terminate sends SIGTERM and expects a clean exit (the daemon drains).
func (p *process) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("after SIGTERM mutual exited with %v, want 0:\n%s", p.err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("mutual did not stop 30 s after SIGTERM:\n%s", p.stderr)
	}
}

// startServer runs `mutual server` on c as a child process until it
// listens; it returns the process, its metrics address and the passphrase
// file.
func startServer(t *testing.T, c *testca.CA) (p *process, metrics, pass string) {
	t.Helper()
	pass = filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte(testca.Passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics = testport.Addr(t)
	p = startProcess(t, "server", "--dir", c.Dir, "--passphrase-file", pass, "--listen", testport.Addr(t), "--metrics", metrics)
	p.waitLog(t, "CA service listening")
	return p, metrics, pass
}

// TestServerSurvivesSIGHUP: the CA keeps running and keeps its open
// connections when it gets SIGHUP, shows which build it is on /metrics, and
// stops cleanly on SIGTERM.
func TestServerSurvivesSIGHUP(t *testing.T) {
	c := testca.New(t)
	p, metrics, _ := startServer(t, c)

	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	get := func() (body string, reused bool) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+metrics+"/metrics", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET /metrics: %v\n%s", err, p.stderr)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b), reused
	}
	body, _ := get()
	for _, want := range []string{"mutual_build_info{",
		fmt.Sprintf("mutual_ca_intermediate_expiry_timestamp_seconds %g\n", float64(c.Intermediate.NotAfter.Unix())),
		"mutual_ca_tls_certificate_expiry_timestamp_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("the CA's /metrics has no %q:\n%s", want, body)
		}
	}
	p.hangUp(t)
	if _, reused := get(); !reused {
		t.Error("the keep-alive connection opened before SIGHUP was not there after it")
	}
	p.terminate(t)
}

// TestProxySurvivesSIGHUP: a proxy keeps serving, and keeps the mTLS
// connection it carried before SIGHUP, after SIGHUP; its /metrics says
// which build it is.
func TestProxySurvivesSIGHUP(t *testing.T) {
	c := testca.New(t)
	dir := agentStyleDir(t, c, "spiffe://example.org/ns/prod/proxy", "")
	listen, metrics := testport.Addr(t), testport.Addr(t)
	p := startProcess(t, "proxy", "inbound", "--identity-dir", dir, "--target", testnet.Echo(t), "--listen", listen,
		"--allow", "spiffe://example.org/ns/prod/*", "--no-revocation", "--metrics", metrics)
	p.waitLog(t, `"msg":"proxy listening"`)
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "mutual_build_info{") {
		t.Errorf("the proxy's /metrics has no mutual_build_info:\n%s", body)
	}

	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	tc := c.Leaf(t, "spiffe://example.org/ns/prod/client").TLSCertificate()
	dial := func() *tls.Conn {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", listen,
			&tls.Config{Certificates: []tls.Certificate{tc}, RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("dial the proxy: %v\n%s", err, p.stderr)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		return conn
	}
	echoes := func(conn *tls.Conn, msg string) {
		t.Helper()
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatalf("write through the proxy: %v", err)
		}
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, b); err != nil || !bytes.Equal(b, []byte(msg)) {
			t.Fatalf("read through the proxy: %q, %v\n%s", b, err, p.stderr)
		}
	}
	before := dial()
	defer before.Close()
	echoes(before, "before")
	p.hangUp(t)
	echoes(before, "same connection after SIGHUP")
	after := dial()
	defer after.Close()
	echoes(after, "new connection after SIGHUP")
	before.Close() // SIGTERM drains: it waits for open connections
	after.Close()
	p.terminate(t)
}

// TestSIGHUPStillEndsCommandsThatAreNotDaemons: only service commands
// ignore SIGHUP; an interactive one (`diagnose --listen`) still ends when
// its terminal hangs up.
func TestSIGHUPStillEndsCommandsThatAreNotDaemons(t *testing.T) {
	c := testca.New(t)
	dir := agentStyleDir(t, c, "spiffe://example.org/ns/prod/diag", "")
	listen := testport.Addr(t)
	p := startProcess(t, "diagnose", "--listen", listen, "--identity-dir", dir)
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("diagnose never listened on %s:\n%s", listen, p.stderr)
		}
		select {
		case <-p.exited:
			t.Fatalf("diagnose exited: %v\n%s", p.err, p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("diagnose --listen survived SIGHUP: only daemons should")
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
		t.Errorf("diagnose ended with %v, want killed by SIGHUP", p.err)
	}
}

// TestProxySIGHUPReloadsPolicy: with a poll interval of an hour, a changed
// --policy file and a rewritten identity directory take effect on SIGHUP
// alone, and the connection opened before keeps working.
func TestProxySIGHUPReloadsPolicy(t *testing.T) {
	c := testca.New(t)
	dir := agentStyleDir(t, c, "spiffe://example.org/ns/prod/proxy", "")
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy := func(ids ...string) {
		t.Helper()
		body := "rules:\n  - ids: [" + strings.Join(ids, ", ") + "]\n"
		if err := os.WriteFile(policy, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePolicy("spiffe://example.org/ns/prod/old")
	listen := testport.Addr(t)
	p := startProcess(t, "proxy", "inbound", "--identity-dir", dir, "--target", testnet.Echo(t), "--listen", listen,
		"--policy", policy, "--poll-interval", "1h", "--no-revocation")
	p.waitLog(t, `"msg":"proxy listening"`)

	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	// echoAs connects as id and reports whether the proxy carried a message
	// to the service and back.
	dial := func(id string) *tls.Conn {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", listen, &tls.Config{
			Certificates: []tls.Certificate{c.Leaf(t, id).TLSCertificate()}, RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatalf("dial the proxy as %s: %v\n%s", id, err, p.stderr)
		}
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		return conn
	}
	echoes := func(conn *tls.Conn, msg string) error {
		if _, err := io.WriteString(conn, msg); err != nil {
			return err
		}
		b := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, b); err != nil {
			return err
		}
		if string(b) != msg {
			return errors.New("echo garbled: " + string(b))
		}
		return nil
	}
	old := dial("spiffe://example.org/ns/prod/old")
	defer old.Close()
	if err := echoes(old, "allowed"); err != nil {
		t.Fatalf("the policy's identity is refused: %v\n%s", err, p.stderr)
	}
	refused := dial("spiffe://example.org/ns/prod/new")
	if err := echoes(refused, "refused"); err == nil {
		t.Fatalf("an identity outside the policy got through")
	}
	refused.Close()

	writePolicy("spiffe://example.org/ns/prod/old", "spiffe://example.org/ns/prod/new")
	next := c.Leaf(t, "spiffe://example.org/ns/prod/proxy", testca.IP("127.0.0.1"))
	if err := next.Save(dir); err != nil {
		t.Fatal(err)
	}
	p.hangUp(t)
	p.waitLog(t, `"msg":"policy reloaded"`)
	p.waitLog(t, `"msg":"identity reloaded"`)
	fresh := dial("spiffe://example.org/ns/prod/new")
	defer fresh.Close()
	if got := fresh.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(next.Leaf().SerialNumber) != 0 {
		t.Errorf("after SIGHUP the proxy presents serial %x, want the new identity's %x", got, next.Leaf().SerialNumber)
	}
	if err := echoes(fresh, "allowed now"); err != nil {
		t.Fatalf("after SIGHUP the new policy is not in effect: %v\n%s", err, p.stderr)
	}
	if err := echoes(old, "still here"); err != nil {
		t.Fatalf("the connection opened before SIGHUP was dropped: %v", err)
	}
	old.Close()
	fresh.Close()
	p.terminate(t)
}

// TestAgentSurvivesSIGHUP: the agent keeps running on SIGHUP, its health
// endpoints answering (ready: enrolled, revocation feed followed), and
// stops cleanly on SIGTERM.
func TestAgentSurvivesSIGHUP(t *testing.T) {
	e := testenv.StartCA(t, testenv.Options{})
	tok := e.Token(t, "spiffe://example.org/node/hup", api.TokenRequest{})
	base, err := os.MkdirTemp("", "hup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	metrics := testport.Addr(t)
	p := startProcess(t, "agent", "--dir", filepath.Join(base, "state"), "--token", tok,
		"--socket", "unix://"+filepath.Join(base, "agent.sock"), "--metrics", metrics, "--sync-interval", "200ms")
	p.waitLog(t, `"msg":"agent running"`)
	ready := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Get("http://" + metrics + "/readyz")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
				err = errors.New(string(b))
			}
			if time.Now().After(deadline) {
				t.Fatalf("the agent's /readyz: %v\n%s", err, p.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ready()
	p.hangUp(t)
	ready()
	p.terminate(t)
}

// TestServerFollowsRotationOnSIGHUP: after `ca rotate-intermediate`, a
// running server sent SIGHUP reloads its CA directory without stopping:
// /metrics reports the new intermediate's expiry on the connection opened
// before.
func TestServerFollowsRotationOnSIGHUP(t *testing.T) {
	c := testca.New(t)
	p, metrics, pass := startServer(t, c)
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	expiry := func() string {
		t.Helper()
		resp, err := hc.Get("http://" + metrics + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v\n%s", err, p.stderr)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "mutual_ca_intermediate_expiry_timestamp_seconds ") {
				return l
			}
		}
		t.Fatalf("no intermediate expiry on /metrics:\n%s", b)
		return ""
	}
	before := expiry()
	if out, err := run("ca", "rotate-intermediate", "--dir", c.Dir, "--passphrase-file", pass); err != nil {
		t.Fatalf("ca rotate-intermediate: %v\n%s", err, out)
	}
	inter, err := pki.ReadCertificates(filepath.Join(c.Dir, pki.IntermediateCertFile))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("mutual_ca_intermediate_expiry_timestamp_seconds %g", float64(inter[0].NotAfter.Unix()))
	p.hangUp(t)
	p.waitLog(t, "CA directory reloaded")
	if got := expiry(); got != want {
		t.Fatalf("after the rotation and SIGHUP /metrics says %q (before: %q), want %q\n%s", got, before, want, p.stderr)
	}
	p.terminate(t)
}
