package publish_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// openStream opens one feed stream as id over its own connection (or over
// tr, shared, when given) and returns the status, the error body when
// refused, and a function that closes the stream.
func openStream(t *testing.T, url string, id *identity.Identity, tr *http.Transport) (int, api.Error, http.Header, func()) {
	t.Helper()
	if tr == nil {
		tr = &http.Transport{TLSClientConfig: clientTLS(id, "")}
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/revocations", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("open a feed stream as %s: %v", id.ID, err)
	}
	closeFn := func() {
		cancel()
		resp.Body.Close()
		tr.CloseIdleConnections()
	}
	t.Cleanup(closeFn)
	var ae api.Error
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(b, &ae); err != nil {
			t.Fatalf("refused stream: body is not a JSON error: %q", b)
		}
		return resp.StatusCode, ae, resp.Header, closeFn
	}
	if tr.ForceAttemptHTTP2 && resp.ProtoMajor != 2 {
		t.Fatalf("want an HTTP/2 stream, got %s", resp.Proto)
	}
	// Wait for the first line: the stream is being served.
	buf := make([]byte, 1)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("feed stream as %s: %v", id.ID, err)
	}
	return resp.StatusCode, ae, resp.Header, closeFn
}

// TestFeedStreamsAreBoundedPerIdentityAndInTotal: any workload certificate
// may open the revocation feed, so without bounds one of them could hold
// thousands of streams and the CA's memory with them. With real
// connections (and HTTP/2 streams on one connection): one identity gets at
// most its limit (429, with any of its certificates), everyone together the
// total (503), with JSON errors, a metric, and room again once streams close.
func TestFeedStreamsAreBoundedPerIdentityAndInTotal(t *testing.T) {
	e := testenv.StartCA(t, testenv.Options{Metrics: true, FeedMaxStreams: 5, FeedMaxStreamsPerIdentity: 3})
	a := e.Enroll(t, "spiffe://example.org/ns/prod/greedy", api.TokenRequest{})
	b := e.Enroll(t, "spiffe://example.org/ns/prod/other", api.TokenRequest{})

	var closeA []func()
	for i := range 3 {
		st, ae, _, cl := openStream(t, e.URL, a, nil)
		if st != http.StatusOK {
			t.Fatalf("stream %d of %s refused within its limit: %d %+v", i+1, a.ID, st, ae)
		}
		closeA = append(closeA, cl)
	}
	st, ae, h, _ := openStream(t, e.URL, a, nil)
	if st != http.StatusTooManyRequests || ae.Code != "feed_streams_per_identity" || !strings.Contains(ae.Error, "--feed-max-streams-per-identity") || h.Get("Retry-After") == "" {
		t.Fatalf("4th stream of one identity: %d %+v (Retry-After %q), want 429 feed_streams_per_identity", st, ae, h.Get("Retry-After"))
	}
	// Another certificate of the same identity does not get around it.
	a2, err := client.RenewIdentity(context.Background(), a, []string{e.URL}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, ae, _, _ := openStream(t, e.URL, a2, nil); st != http.StatusTooManyRequests {
		t.Fatalf("a renewed certificate of %s opened a 4th stream: %d %+v", a.ID, st, ae)
	}

	// Everyone together: 3 + 2 = 5, the total.
	for i := range 2 {
		if st, ae, _, _ := openStream(t, e.URL, b, nil); st != http.StatusOK {
			t.Fatalf("stream %d of %s refused below the total: %d %+v", i+1, b.ID, st, ae)
		}
	}
	st, ae, h, _ = openStream(t, e.URL, b, nil)
	if st != http.StatusServiceUnavailable || ae.Code != "feed_full" || h.Get("Retry-After") == "" {
		t.Fatalf("stream beyond the total: %d %+v, want 503 feed_full", st, ae)
	}

	// Closing a stream makes room again.
	closeA[0]()
	testwait.Eventually(t, func() bool {
		return strings.Contains(metrics(t, e), "\nmutual_ca_feed_streams 4\n")
	}, "a closed stream was not released")
	st, ae, _, closeA[0] = openStream(t, e.URL, a, nil)
	if st != http.StatusOK {
		t.Fatalf("after one of its streams closed, %s was refused another: %d %+v", a.ID, st, ae)
	}

	// HTTP/2: streams on one connection count one by one.
	for _, cl := range closeA {
		cl()
	}
	testwait.Eventually(t, func() bool {
		return strings.Contains(metrics(t, e), "\nmutual_ca_feed_streams 2\n")
	}, "the closed streams were not released")
	cfg := clientTLS(a, "")
	cfg.NextProtos = []string{"h2"}
	h2 := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	for i := range 3 {
		if st, ae, _, _ := openStream(t, e.URL, a, h2); st != http.StatusOK {
			t.Fatalf("HTTP/2 stream %d refused within the limit: %d %+v", i+1, st, ae)
		}
	}
	if st, ae, _, _ := openStream(t, e.URL, a, h2); st != http.StatusTooManyRequests {
		t.Fatalf("a 4th HTTP/2 stream of one identity on one connection: %d %+v, want 429", st, ae)
	}

	body := metrics(t, e)
	for _, want := range []string{`mutual_ca_feed_streams_refused_total{limit="identity"} 3`, `mutual_ca_feed_streams_refused_total{limit="total"} 1`, "\nmutual_ca_feed_streams 5\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func metrics(t *testing.T, e *testenv.CA) string {
	t.Helper()
	resp, err := http.Get(e.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
