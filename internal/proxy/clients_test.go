package proxy_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testnet"
	"github.com/mutual-tls/mutual/internal/testwait"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// need returns the path of a third-party client, skipping the test when it
// is missing (failing it on CI, where it must be installed).
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required on CI: %v", tool, err)
		}
		t.Skipf("%s not installed; skipping the test against a real %s client", tool, tool)
	}
	return p
}

// run runs a command with a safety-net timeout and returns its output.
func run(t *testing.T, stdin string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish: %s", name, args, e.String())
	}
	return o.String(), e.String(), err
}

// saveClient writes id as an identity directory, plus inter.pem with the
// intermediates alone (for openssl -cert_chain).
func saveClient(t *testing.T, id *identity.Identity) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "client")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "inter.pem"), pki.EncodeCertificates(id.Chain[1:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCurlThroughInboundHTTP(t *testing.T) {
	curl := need(t, "curl")
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: httpBackend(t), Protocol: proxy.HTTP})
	web, db := saveClient(t, w.ca.Leaf(t, webID)), saveClient(t, w.ca.Leaf(t, dbID))
	url := "https://" + r.addr + "/hello"
	curlArgs := func(dir string, extra ...string) []string {
		args := []string{"-sS", "--max-time", "20", "-w", "\n%{http_code} %{http_version}",
			"--cacert", filepath.Join(dir, identity.BundleFile)}
		if dir != "" {
			args = append(args, "--cert", filepath.Join(dir, identity.CertFile), "--key", filepath.Join(dir, identity.KeyFile))
		}
		return append(append(args, extra...), url)
	}
	for _, tt := range []struct {
		name    string
		args    []string
		code    string
		version string
	}{
		{"http/1.1", curlArgs(web, "--http1.1", "-H", "X-Forwarded-Client-Cert: URI="+adminID), "200", "1.1"},
		{"http/2", curlArgs(web, "--http2", "-H", "X-Forwarded-Client-Cert: URI="+adminID), "200", "2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := run(t, "", curl, tt.args...)
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, errOut)
			}
			body, status := splitLast(out)
			if status != tt.code+" "+tt.version {
				t.Errorf("status, version = %q; want %s %s", status, tt.code, tt.version)
			}
			var s seen
			if err := json.Unmarshal([]byte(body), &s); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if len(s.XFCC) != 1 || !strings.Contains(s.XFCC[0], "URI="+webID) || !strings.Contains(s.XFCC[0], "By="+proxyID) {
				t.Errorf("backend saw %s %q; want the client's identity only", proxy.XFCCHeader, s.XFCC)
			}
		})
	}
	t.Run("denied", func(t *testing.T) {
		out, errOut, err := run(t, "", curl, curlArgs(db)...)
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, errOut)
		}
		body, status := splitLast(out)
		if !strings.HasPrefix(status, "403 ") || !strings.Contains(body, dbID) || !strings.Contains(body, "not allowed to GET /hello") {
			t.Errorf("curl = %q; want 403 naming %s and the request", out, dbID)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		args := []string{"-sS", "--max-time", "20", "--cacert", filepath.Join(web, identity.BundleFile), url}
		if out, _, err := run(t, "", curl, args...); err == nil {
			t.Errorf("curl without a certificate succeeded: %q", out)
		}
	})
}

// lineBackend echoes one line and closes.
func lineBackend(t *testing.T) string {
	return testnet.Serve(t, func(c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			io.WriteString(c, line)
		}
	})
}

func TestOpenSSLThroughInboundTCP(t *testing.T) {
	openssl := need(t, "openssl")
	w := newWorld(t)
	r := runInbound(t, w, proxy.InboundConfig{Target: lineBackend(t)})
	web := saveClient(t, w.ca.Leaf(t, webID))
	base := []string{"s_client", "-connect", r.addr, "-quiet", "-verify_return_error", "-verify_ip", "127.0.0.1",
		"-CAfile", filepath.Join(web, identity.BundleFile)}
	const line = "hello through openssl\n"
	t.Run("mtls", func(t *testing.T) {
		args := append(base, "-cert", filepath.Join(web, identity.CertFile), "-key", filepath.Join(web, identity.KeyFile),
			"-cert_chain", filepath.Join(web, "inter.pem"))
		out, errOut, err := run(t, line, openssl, args...)
		if err != nil {
			t.Fatalf("openssl: %v\n%s", err, errOut)
		}
		if out != line {
			t.Errorf("openssl read %q, want %q\nstderr: %s", out, line, errOut)
		}
	})
	t.Run("leaf only", func(t *testing.T) {
		// Without -cert_chain openssl sends the first certificate of the file.
		args := append(base, "-cert", filepath.Join(web, identity.CertFile), "-key", filepath.Join(web, identity.KeyFile))
		out, errOut, err := run(t, line, openssl, args...)
		if err != nil || out != line {
			t.Errorf("openssl = %q, %v; want %q\nstderr: %s", out, err, line, errOut)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		out, _, _ := run(t, line, openssl, base...)
		if strings.Contains(out, "hello") {
			t.Errorf("a client without a certificate got through: %q", out)
		}
		testwait.Eventually(t, func() bool {
			return metricValue(t, r.reg, "mutual_proxy_handshake_refusals_total", map[string]string{"reason": "no certificate"}) == 1
		}, "refusal counted")
	})
}

// outboundRun is a running outbound proxy.
type outboundRun struct {
	addr string
	o    *proxy.Outbound
}

func runOutbound(t *testing.T, w *world, target string, expect ...string) *outboundRun {
	t.Helper()
	return outboundWith(t, w, proxy.OutboundConfig{Target: target, Expect: patterns(t, expect...)}, nil)
}

// inboundForOutbound is an inbound http proxy that allows the outbound
// proxy's identity.
func inboundForOutbound(t *testing.T, w *world, protocol proxy.Protocol, target string) *proxyRun {
	pol, err := authz.FromPatterns([]string{outID})
	if err != nil {
		t.Fatal(err)
	}
	return runInbound(t, w, proxy.InboundConfig{Target: target, Protocol: protocol, Policy: proxy.StaticPolicy{P: pol}})
}

func TestCurlThroughOutbound(t *testing.T) {
	curl := need(t, "curl")
	w := newWorld(t)
	in := inboundForOutbound(t, w, proxy.HTTP, httpBackend(t))
	t.Run("expected server", func(t *testing.T) {
		out := runOutbound(t, w, in.addr, "spiffe://example.org/ns/prod/*")
		body, errOut, err := run(t, "", curl, "-sS", "--max-time", "20", "--fail-with-body", "http://"+out.addr+"/via-outbound")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, errOut)
		}
		var s seen
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		if s.Path != "/via-outbound" || len(s.XFCC) != 1 || !strings.Contains(s.XFCC[0], "URI="+outID) || !strings.Contains(s.XFCC[0], "By="+proxyID) {
			t.Errorf("backend saw %s %q; want the outbound proxy's identity", proxy.XFCCHeader, s.XFCC)
		}
	})
	t.Run("unexpected server", func(t *testing.T) {
		out := runOutbound(t, w, in.addr, "spiffe://example.org/ns/prod/db")
		if body, _, err := run(t, "", curl, "-sS", "--max-time", "20", "http://"+out.addr+"/"); err == nil {
			t.Errorf("curl through an outbound proxy expecting another server succeeded: %q", body)
		}
	})
}

// TestOutbound covers the outbound proxy without third-party clients.
func TestOutbound(t *testing.T) {
	w := newWorld(t)
	t.Run("http", func(t *testing.T) {
		in := inboundForOutbound(t, w, proxy.HTTP, httpBackend(t))
		out := runOutbound(t, w, in.addr, proxyID)
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		for i := range 3 {
			res := doRequest(c, "GET", "http://"+out.addr+"/x", http.Header{proxy.XFCCHeader: {"URI=" + adminID}})
			if res.err != nil || res.code != 200 || len(res.seen.XFCC) != 1 || !strings.Contains(res.seen.XFCC[0], "URI="+outID) {
				t.Fatalf("request %d = %d %v, backend saw %q", i, res.code, res.err, res.seen.XFCC)
			}
		}
	})
	t.Run("tcp half-close", func(t *testing.T) {
		in := inboundForOutbound(t, w, proxy.TCP, collectBackend(t))
		out := runOutbound(t, w, in.addr, "spiffe://example.org/**")
		data := []byte(strings.Repeat("0123456789", 100000))
		got, err := halfCloseRoundTrip(out.addr, w, nil, true, data)
		if err != nil || string(got) != string(data) {
			t.Fatalf("round trip: %d of %d bytes, %v", len(got), len(data), err)
		}
	})
	t.Run("server not allowed to inbound", func(t *testing.T) {
		// The inbound proxy's policy does not list the outbound identity.
		in := runInbound(t, w, proxy.InboundConfig{Target: testnet.Echo(t)})
		out := runOutbound(t, w, in.addr, proxyID)
		if got, err := testnet.RoundTrip(out.addr, nil, "x"); err == nil {
			t.Errorf("round trip = %q; want refused by the inbound proxy", got)
		}
	})
	t.Run("unexpected server", func(t *testing.T) {
		in := inboundForOutbound(t, w, proxy.TCP, testnet.Echo(t))
		out := runOutbound(t, w, in.addr, "spiffe://example.org/ns/prod/db", "spiffe://other.org/**")
		if got, err := testnet.RoundTrip(out.addr, nil, "x"); err == nil {
			t.Errorf("round trip = %q; want refused", got)
		}
		_, err := out.o.Dial(context.Background())
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonNotAuthorized || pe.ID.String() != proxyID {
			t.Errorf("Dial = %v; want a PeerError: %s not authorized", err, proxyID)
		}
	})
	t.Run("server name mismatch", func(t *testing.T) {
		in := inboundForOutbound(t, w, proxy.TCP, testnet.Echo(t))
		pat, _ := authz.ParsePattern(proxyID)
		// The proxy certificate names 127.0.0.1 and localhost only.
		o, err := proxy.NewOutbound(proxy.OutboundConfig{Target: in.addr, ServerName: "db.example.org", Expect: []authz.Pattern{pat}, SVID: w.src, Bundle: w.src})
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.Dial(context.Background())
		var he x509.HostnameError
		if !errors.As(err, &he) || he.Host != "db.example.org" {
			t.Errorf("Dial = %v; want a name mismatch", err)
		}
	})
	t.Run("config errors", func(t *testing.T) {
		pat, _ := authz.ParsePattern(proxyID)
		for _, tt := range []struct {
			cfg  proxy.OutboundConfig
			want string
		}{
			{proxy.OutboundConfig{Target: "nope", Expect: []authz.Pattern{pat}, SVID: w.src, Bundle: w.src}, "--target"},
			{proxy.OutboundConfig{Target: "127.0.0.1:1", SVID: w.src, Bundle: w.src}, "--expect"},
			{proxy.OutboundConfig{Target: "127.0.0.1:1", Expect: []authz.Pattern{pat}}, "certificate source"},
		} {
			if _, err := proxy.NewOutbound(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewOutbound = %v; want an error naming %s", err, tt.want)
			}
		}
	})
}

// splitLast splits curl's output into the body and the -w line after it.
func splitLast(out string) (body, last string) {
	i := strings.LastIndex(out, "\n")
	if i < 0 {
		return "", out
	}
	return out[:i], out[i+1:]
}
