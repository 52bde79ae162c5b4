package dashboard_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/dashboard"
	"github.com/mutual-tls/mutual/internal/proxy"
	"github.com/mutual-tls/mutual/internal/testenv"
)

// chromium finds a headless-capable Chromium, or skips the test (fails it
// in CI, which installs one).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; .ci/run installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium): the browser test is skipped")
	return ""
}

// console collects what the pages of a browser tab logged.
type console struct {
	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
	marks    int
}

func (c *console) add(m chromedp.ConsoleMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messages = append(c.messages, m)
}

// problems returns every error or warning logged since the last call
// (Chromium reports each CSP violation as a console error), once the
// console has caught up: it logs a mark and waits, with a deadline, until
// the mark arrives.
func (c *console) problems(t *testing.T, ctx context.Context) []string {
	t.Helper()
	c.mu.Lock()
	c.marks++
	mark := fmt.Sprintf("mutual-test-mark-%d", c.marks)
	c.mu.Unlock()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`console.log("`+mark+`"), 1`)); err != nil {
		t.Fatalf("log a console mark: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		for i, m := range c.messages {
			if m.Text != mark {
				continue
			}
			var out []string
			for _, p := range c.messages[:i] {
				if p.Type == chromedp.ConsoleError || p.Type == chromedp.ConsoleWarning || p.IsException() {
					out = append(out, p.String()+" ("+p.URL+")")
				}
			}
			c.messages = append([]chromedp.ConsoleMessage(nil), c.messages[i+1:]...)
			c.mu.Unlock()
			return out
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("the console mark %s did not arrive in 30s", mark)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newBrowser starts a headless Chromium tab for the test and a console
// that collects its messages until the test ends.
func newBrowser(t *testing.T) (context.Context, *console) {
	t.Helper()
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1180))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	c := &console{}
	messages := chromedp.Console(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m, err := range messages {
			if err != nil {
				return
			}
			c.add(m)
		}
	}()
	t.Cleanup(func() { cancel(); cancelAlloc(); wg.Wait() })
	return ctx, c
}

// TestBrowserSeesNoViolation: the console check catches a CSP violation
// (a page with inline script and style under the dashboard's policy), then
// Chromium loads every dashboard page of a CA with realistic data with no
// console error, revokes a certificate through the form and an identity
// through its action page, which the CA then reports revoked. With
// MUTUAL_DASHBOARD_SCREENSHOTS=1 it also saves the screenshots docs/ shows.
func TestBrowserSeesNoViolation(t *testing.T) {
	ctx, con := newBrowser(t)

	// The control: the same policy on a page that breaks it.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'")
		fmt.Fprint(w, `<!doctype html><html><body><main style="color:red">x</main><script>document.title="ran"</script></body></html>`)
	}))
	defer bad.Close()
	if err := chromedp.Do(ctx, chromedp.Navigate(bad.URL), chromedp.WaitReady(chromedp.CSS("main"))); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if got := con.problems(t, ctx); title == "ran" || !strings.Contains(strings.Join(got, "\n"), "Content Security Policy") {
		t.Fatalf("the console check missed a CSP violation (title %q): %q", title, got)
	}

	e := realistic(t)
	serial := e.enroll(t, "spiffe://example.org/ns/prod/web")
	ledger := e.enroll(t, "spiffe://example.org/ns/prod/ledger")
	for _, page := range []struct{ path, h1, shot string }{
		{"/", "Overview", "overview"}, {"/certificates?status=valid", "Certificates", ""}, {"/certificates?status=revoked", "Certificates", "certificates"},
		{"/certificates?status=valid&q=spiffe://example.org/ns/prod/web", "Certificates", ""},
		{"/certificates/" + serial, "Certificate " + serial, ""}, {"/identities", "Identities", ""}, {"/nodes", "Nodes", ""},
		{"/log", "Issuance log", "log"}, {"/federation", "Partners and federation", ""}, {"/migration", "Migration to strict mTLS", ""},
		{"/actions/revoke-identity?target=spiffe://example.org/ns/prod/web", "Revoke an identity", ""},
	} {
		if err := chromedp.Do(ctx, chromedp.Navigate(e.base+page.path), chromedp.WaitReady(chromedp.CSS("main"))); err != nil {
			t.Fatalf("%s: %v", page.path, err)
		}
		h1, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1")))
		if err != nil {
			t.Fatalf("%s: %v", page.path, err)
		}
		if h1 != page.h1 {
			t.Errorf("%s: heading %q, want %q", page.path, h1, page.h1)
		}
		if got := con.problems(t, ctx); len(got) > 0 {
			t.Errorf("%s: console problems: %q", page.path, got)
		}
		screenshot(t, ctx, page.shot)
	}

	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.base+"/certificates/"+serial),
		chromedp.SetValue(chromedp.CSS(`select[name="reason"]`), "keyCompromise"),
		chromedp.Click(chromedp.CSS(`input[name="confirm"]`)),
		chromedp.Click(chromedp.CSS(`button.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`p.done`)),
	); err != nil {
		t.Fatalf("revoke through the form: %v", err)
	}
	done, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`p.done`)))
	if err != nil {
		t.Fatal(err)
	}
	if !e.revoked(t, serial) {
		t.Fatalf("the form said %q but the CA does not report %s revoked", done, serial)
	}
	if got := con.problems(t, ctx); len(got) > 0 {
		t.Errorf("revocation: console problems: %q", got)
	}

	// An action on its own page: revoke every certificate of an identity
	// (with a deadline: a selector that matches nothing waits forever).
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(actx,
		chromedp.Navigate(e.base+"/identities"),
		chromedp.Click(chromedp.CSS(`a.act[href^="/actions/revoke-identity?"][href$="ledger"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button.danger`)),
		chromedp.SetValue(chromedp.CSS(`select[name="reason"]`), "cessationOfOperation"),
		chromedp.Click(chromedp.CSS(`input[name="confirm"]`)),
		chromedp.Click(chromedp.CSS(`button.danger`)),
		chromedp.WaitVisible(chromedp.CSS(`p.done`)),
	); err != nil {
		t.Fatalf("revoke an identity through its action page: %v", err)
	}
	if !e.revoked(t, ledger) {
		t.Fatalf("the action page said done but the CA does not report %s (ns/prod/ledger) revoked", ledger)
	}
	if got := con.problems(t, ctx); len(got) > 0 {
		t.Errorf("identity revocation: console problems: %q", got)
	}
}

// screenshotsEnv names the variable that makes TestBrowserSeesNoViolation
// save docs/dashboard-NAME.png (not on every run: they are committed).
const screenshotsEnv = "MUTUAL_DASHBOARD_SCREENSHOTS"

// screenshot saves the page shown as docs/dashboard-NAME.png when
// screenshotsEnv is set and name is not empty.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if name == "" || os.Getenv(screenshotsEnv) == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join("..", "..", "docs", "dashboard-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(png))
}

// realistic is a CA holding what an operator's would: workloads and nodes
// enrolled, some hundreds of certificates expiring over the week, a few
// revoked, a registration entry, an unused token, a partnership, a log
// monitor's finding, and a permissive proxy with clients still coming in
// without a certificate.
func realistic(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	c := testenv.StartCA(t, testenv.Options{})
	e := &env{ca: c, admin: c.AdminID, cl: clientAs(t, c.URL, c.AdminID)}
	for _, id := range []string{"spiffe://example.org/ns/prod/api", "spiffe://example.org/ns/prod/db", "spiffe://example.org/node/n1", "spiffe://example.org/node/n2"} {
		e.enroll(t, id)
	}
	old := e.enroll(t, "spiffe://example.org/ns/prod/batch")
	if _, err := e.cl.Revoke(ctx, api.RevokeRequest{Serial: old, Reason: "superseded"}); err != nil {
		t.Fatal(err)
	}
	e.fill(t, 400)
	if _, err := e.cl.CreateEntry(ctx, api.EntryRequest{SPIFFEID: "spiffe://example.org/ns/prod/db",
		Nodes: []string{"spiffe://example.org/node/*"}, Selectors: []string{"unix:uid:1001"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.CreateToken(ctx, api.TokenRequest{SPIFFEID: "spiffe://example.org/ns/prod/cache"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cl.CreatePartner(ctx, api.PartnerRequest{Name: "acme", Roles: []string{"billing"}, EndsAt: time.Now().Add(30 * 24 * time.Hour),
		PartnerScope: api.PartnerScope{Services: []string{"spiffe://example.org/ns/prod/orders"}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.cl.ReportFindings(ctx, api.FindingsReport{Findings: []api.Finding{{Rule: "unexplained_identity", LogIndex: 3,
		SPIFFEID: "spiffe://example.org/ns/prod/db", Serial: old, Detail: "issued with token 5e35b5d80f45d34b, which grants spiffe://example.org/ns/prod/api"}}}); err != nil {
		t.Fatal(err)
	}
	mig := proxy.NewMigrationReport()
	for i, ip := range []string{"10.0.4.17", "10.0.4.18", "10.0.9.3"} {
		for range 3 * (i + 1) {
			mig.Record(&net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}, []string{"plaintext", "no-certificate"}[i%2])
		}
	}
	ps := httptest.NewServer(mig)
	t.Cleanup(ps.Close)
	px, err := dashboard.ParseProxy("billing-gateway=" + ps.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.base = serve(t, dashboard.Config{CA: e.cl, Identity: e.admin, Proxies: []dashboard.Proxy{px}}, nil)
	return e
}
