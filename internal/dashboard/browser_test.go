package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mutual-tls/mutual/internal/api"
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
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU)
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
// Chromium loads every dashboard page with no console error and revokes a
// certificate through the form, which the CA then reports revoked.
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

	e := newEnv(t)
	serial := e.enroll(t, "spiffe://example.org/ns/prod/web")
	e.enroll(t, "spiffe://example.org/node/n1")
	if _, err := e.cl.CreateEntry(context.Background(), api.EntryRequest{SPIFFEID: "spiffe://example.org/ns/prod/db",
		Nodes: []string{"spiffe://example.org/node/*"}, Selectors: []string{"unix:uid:1001"}}); err != nil {
		t.Fatal(err)
	}
	for _, page := range []struct{ path, h1 string }{
		{"/", "Overview"}, {"/certificates", "Certificates"}, {"/certificates?status=valid&q=spiffe://example.org/ns/prod/web", "Certificates"},
		{"/certificates/" + serial, "Certificate " + serial}, {"/identities", "Identities"}, {"/nodes", "Nodes"}, {"/log", "Issuance log"},
		{"/federation", "Partners and federation"}, {"/migration", "Migration to strict mTLS"},
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
}
