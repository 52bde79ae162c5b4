package dashboard_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/dashboard"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// env is a real CA service and a dashboard in front of it, both on
// 127.0.0.1, with the operator's admin identity.
type env struct {
	ca    *testenv.CA
	admin *identity.Identity
	// cl is the admin's client of the CA, which the dashboard uses too.
	cl *client.Client
	// base is the dashboard's URL.
	base string
}

// clientAs makes a client of the CA at url that presents id.
func clientAs(t testing.TB, url string, id *identity.Identity) *client.Client {
	t.Helper()
	tc := id.TLSCertificate()
	cl, err := client.New([]string{url}, id.Roots, &tc)
	if err != nil {
		t.Fatal(err)
	}
	cl.Retries = -1
	t.Cleanup(cl.CloseIdleConnections)
	return cl
}

func newEnv(t testing.TB) *env {
	t.Helper()
	c := testenv.StartCA(t, testenv.Options{})
	e := &env{ca: c, admin: c.AdminID, cl: clientAs(t, c.URL, c.AdminID)}
	e.base = serve(t, dashboard.Config{CA: e.cl, Identity: e.admin}, nil)
	return e
}

// serve runs a dashboard on 127.0.0.1 until the test ends and returns its
// base URL.
func serve(t testing.TB, cfg dashboard.Config, tlsID *identity.Identity) string {
	t.Helper()
	cfg.TLS = tlsID
	d, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := dashboard.Listen("127.0.0.1:0", tlsID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("dashboard: %v", err)
		}
	})
	scheme := "http"
	if tlsID != nil {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String()
}

// enroll issues a certificate for id through a join token, as a workload
// would, and returns its serial.
func (e *env) enroll(t *testing.T, id string) string {
	t.Helper()
	return pki.FormatSerial(e.ca.Enroll(t, id, api.TokenRequest{}).Leaf().SerialNumber)
}

// browser is an HTTP client with its own cookies, as one browser is.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches a page and returns its status and body.
func get(t *testing.T, hc *http.Client, u string) (int, string, http.Header) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// post submits a form with extra headers and returns status, body and
// the redirect target.
func post(t *testing.T, hc *http.Client, u string, form url.Values, headers map[string]string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf returns the CSRF token in a page's form.
func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}

// revoked asks the CA whether serial is revoked.
func (e *env) revoked(t *testing.T, serial string) bool {
	t.Helper()
	c, err := e.cl.Certificate(context.Background(), serial)
	if err != nil {
		t.Fatal(err)
	}
	return c.RevokedAt != nil
}

// hostPort is the dashboard's address without the scheme.
func hostPort(base string) string {
	u, _ := url.Parse(base)
	return u.Host
}
