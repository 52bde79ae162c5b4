package monitor_test

// Run against a real log: a store on SQLite, the log's own Server signing
// checkpoints over it and serving it over HTTP, certificates from a test CA.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/monitor"
)

// safetyNet bounds every wait so that a hang fails the test instead of the
// run. It is not a performance assertion.
const safetyNet = 30 * time.Second

type logFixture struct {
	ca     *testca.CA
	db     *store.DB
	srv    *translog.Server
	client *translog.Client
	// verifier is the log's verifier key.
	verifier string
}

// newLog serves an empty log signed with the log key of a fresh test CA
// (or of ca when given).
func newLog(t *testing.T, ca *testca.CA) *logFixture {
	t.Helper()
	if ca == nil {
		ca = testca.New(t)
	}
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "log.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	signer, err := translog.LoadOrCreateKey(ca.Dir, ca.TrustDomain.Name(), []byte(testca.Passphrase), 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := &translog.Server{Store: db, Signer: signer}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	f := &logFixture{ca: ca, db: db, srv: srv, client: translog.NewClient(hs.URL, nil, signer.Verifier), verifier: signer.Verifier}
	f.checkpoint(t)
	return f
}

// issue records a certificate for id, asked for by, and signs a
// checkpoint over it.
func (f *logFixture) issue(t *testing.T, id string, by translog.Requester) {
	t.Helper()
	cert := f.ca.Leaf(t, id).Leaf()
	now := time.Now()
	rec := &store.Certificate{
		Serial: pki.FormatSerial(cert.SerialNumber), SPIFFEID: id,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, IssuedAt: now,
		DER: cert.Raw, RequestedBy: by.String(),
		LogEntry: translog.Entry{Certificate: cert.Raw, RequestedBy: by, IssuedAt: now.UTC()}.Marshal(),
	}
	if err := f.db.RecordIssuance(context.Background(), rec, "", now); err != nil {
		t.Fatal(err)
	}
	f.checkpoint(t)
}

func (f *logFixture) checkpoint(t *testing.T) {
	t.Helper()
	if err := f.srv.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// config is a single-pass configuration resuming from (and saving to) the
// state file at statePath, explaining identities by the token T1 only.
func (f *logFixture) config(t *testing.T, statePath string) monitor.Config {
	t.Helper()
	st, err := translog.LoadState(statePath)
	if err != nil {
		t.Fatal(err)
	}
	ca := &fakeCA{tokens: []api.TokenInfo{{ID: "T1", SPIFFEID: "spiffe://example.org/ns/a"}}}
	return monitor.Config{
		Client: f.client, State: st, StatePath: statePath, Once: true,
		Admin: func() (monitor.AdminAPI, error) { return ca, nil },
	}
}

func alertCount(t *testing.T, reg *prometheus.Registry, rule string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mutual_log_monitor_alerts_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rule" && l.GetValue() == rule {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestRunOnce: a pass over explained issuances is quiet and saves where it
// stopped; the next run resumes there, and an issuance no token explains
// is an AlertsError, counted in the metrics.
func TestRunOnce(t *testing.T) {
	f := newLog(t, nil)
	statePath := filepath.Join(t.TempDir(), "state.json")
	f.issue(t, "spiffe://example.org/ns/a", translog.TokenRequester("T1"))
	if err := monitor.Run(context.Background(), f.config(t, statePath)); err != nil {
		t.Fatalf("a pass over an explained issuance: %v", err)
	}
	st, err := translog.LoadState(statePath)
	if err != nil || st.Next != 1 || st.Checkpoint == "" {
		t.Fatalf("state after the pass: %+v, %v; want next 1 and the checkpoint", st, err)
	}

	f.issue(t, "spiffe://example.org/ns/b", translog.TokenRequester("T2"))
	cfg := f.config(t, statePath)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	err = monitor.Run(context.Background(), cfg)
	var alerts *monitor.AlertsError
	if !errors.As(err, &alerts) || alerts.Count != 1 {
		t.Fatalf("a pass over an issuance by an unknown token: %v, want an AlertsError of 1", err)
	}
	if got := alertCount(t, reg, "unexplained_identity"); got != 1 {
		t.Errorf("alerts{rule=unexplained_identity} = %v, want 1", got)
	}
	if st, _ := translog.LoadState(statePath); st.Next != 2 {
		t.Errorf("state after the second pass at %d, want 2", st.Next)
	}
}

// TestRunWithoutGrants: a CA whose admin API cannot be reached leaves the
// rules only; the pass goes on and the unknown token goes unremarked.
func TestRunWithoutGrants(t *testing.T) {
	f := newLog(t, nil)
	f.issue(t, "spiffe://example.org/ns/b", translog.TokenRequester("T2"))
	cfg := f.config(t, filepath.Join(t.TempDir(), "state.json"))
	cfg.Admin = func() (monitor.AdminAPI, error) { return nil, errors.New("no admin identity") }
	if err := monitor.Run(context.Background(), cfg); err != nil {
		t.Fatalf("a pass without the CA's grants: %v", err)
	}
	if cfg.State.Next != 1 {
		t.Errorf("pass stopped at %d, want 1", cfg.State.Next)
	}
}

// TestRunFollows: without Once, Run passes again each time its clock says
// the interval is over, serves its metrics meanwhile, and returns nil when
// its context ends, its metrics listener closed.
func TestRunFollows(t *testing.T) {
	f := newLog(t, nil)
	cfg := f.config(t, filepath.Join(t.TempDir(), "state.json"))
	cfg.Once = false
	cfg.Interval = time.Hour
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer, cfg.MetricsListener, cfg.MetricsHandler = reg, ln, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	metricsURL := "http://" + ln.Addr().String() + "/metrics"
	waiting := make(chan time.Duration)
	tick := make(chan time.Time)
	cfg.After = func(d time.Duration) <-chan time.Time { waiting <- d; return tick }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- monitor.Run(ctx, cfg) }()

	passDone := func() {
		t.Helper()
		select {
		case d := <-waiting:
			if d != time.Hour {
				t.Errorf("waits %s between passes, want the configured hour", d)
			}
		case err := <-done:
			t.Fatalf("Run returned before its context ended: %v", err)
		case <-time.After(safetyNet):
			t.Fatal("no pass ended")
		}
	}
	passDone()
	f.issue(t, "spiffe://example.org/ns/a", translog.TokenRequester("T1"))
	if cfg.State.Next != 0 {
		t.Fatalf("a pass ran before the interval was over (at %d)", cfg.State.Next)
	}
	tick <- time.Now()
	passDone()
	if cfg.State.Next != 1 {
		t.Errorf("after the interval, the monitor is at %d, want 1", cfg.State.Next)
	}
	body := get(t, metricsURL)
	for _, want := range []string{"# TYPE mutual_log_monitor_entries_checked_total counter\n", "mutual_log_monitor_entries_checked_total 1\n",
		"# TYPE mutual_log_monitor_next_index gauge\n", "mutual_log_monitor_next_index 1\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics after one entry checked lack %q:\n%s", want, body)
		}
	}
	if body := get(t, strings.TrimSuffix(metricsURL, "/metrics")+"/readyz"); body != "ready\n" {
		t.Errorf("/readyz after a pass: %q", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after its context ended: %v, want nil", err)
		}
	case <-time.After(safetyNet):
		t.Fatal("Run did not return after its context ended")
	}
	if resp, err := http.Get(metricsURL); err == nil {
		resp.Body.Close()
		t.Error("the metrics listener still answers after Run returned")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// TestRunStopsOnRollback: a log smaller than the one seen before, under
// the same key, ends Run with ErrRollback however it is configured.
func TestRunStopsOnRollback(t *testing.T) {
	f := newLog(t, nil)
	statePath := filepath.Join(t.TempDir(), "state.json")
	f.issue(t, "spiffe://example.org/ns/a", translog.TokenRequester("T1"))
	f.issue(t, "spiffe://example.org/ns/a", translog.TokenRequester("T1"))
	if err := monitor.Run(context.Background(), f.config(t, statePath)); err != nil {
		t.Fatal(err)
	}
	shorter := newLog(t, f.ca) // the same key, a fresh store
	shorter.issue(t, "spiffe://example.org/ns/a", translog.TokenRequester("T1"))
	cfg := shorter.config(t, statePath)
	cfg.Once = false
	cfg.After = func(time.Duration) <-chan time.Time {
		t.Error("Run went on after a rollback")
		return nil
	}
	if err := monitor.Run(context.Background(), cfg); !errors.Is(err, translog.ErrRollback) {
		t.Errorf("Run over a rolled-back log: %v, want ErrRollback", err)
	}
}

func TestRunNeedsClientAndState(t *testing.T) {
	if err := monitor.Run(context.Background(), monitor.Config{}); err == nil {
		t.Error("Run without a client started")
	}
	f := newLog(t, nil)
	if err := monitor.Run(context.Background(), monitor.Config{Client: f.client}); err == nil {
		t.Error("Run without a state file started")
	}
}

// TestRunHealth: /livez answers from the start; /readyz is 503 "starting"
// until the first pass has finished, 503 with the cause while the log
// cannot be read, and 200 once a pass has read it.
func TestRunHealth(t *testing.T) {
	f := newLog(t, nil)
	cfg := f.config(t, filepath.Join(t.TempDir(), "state.json"))
	cfg.Once = false
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // the log's address, unreachable
	up := cfg.Client
	cfg.Client = translog.NewClient(down.URL, nil, f.verifier)
	inPass := make(chan struct{})
	release := make(chan struct{})
	admin := cfg.Admin
	first := true
	cfg.Admin = func() (monitor.AdminAPI, error) {
		if first { // hold the first pass until the test has seen "starting"
			first = false
			close(inPass)
			<-release
		}
		return admin()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer, cfg.MetricsListener, cfg.MetricsHandler = reg, ln, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	base := "http://" + ln.Addr().String()
	waiting := make(chan struct{})
	tick := make(chan time.Time)
	cfg.After = func(time.Duration) <-chan time.Time { waiting <- struct{}{}; return tick }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- monitor.Run(ctx, cfg) }()
	health := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pass := func() { t.Helper(); passEnded(t, waiting, done) }

	<-inPass
	if code, body := health("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before the first pass: %d %q", code, body)
	}
	if code, _ := health("/livez"); code != http.StatusOK {
		t.Errorf("/livez before the first pass: %d", code)
	}
	close(release)
	pass()
	if code, body := health("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "is the CA reachable?") {
		t.Errorf("/readyz while the log is unreachable: %d %q", code, body)
	}
	if code, _ := health("/livez"); code != http.StatusOK {
		t.Errorf("/livez while the log is unreachable: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

	// The same monitor state, the log reachable: ready after a pass.
	cfg.Client, cfg.Admin = up, admin
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	cfg.Registerer, cfg.MetricsListener, cfg.MetricsHandler = reg, ln, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	base = "http://" + ln.Addr().String()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- monitor.Run(ctx, cfg) }()
	pass()
	if code, body := health("/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz after a pass that read the log: %d %q", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRunReports: the alerts of a pass go to Config.Report, with their
// evidence; a single pass (Once) that could not report says so.
func TestRunReports(t *testing.T) {
	f := newLog(t, nil)
	statePath := filepath.Join(t.TempDir(), "state.json")
	f.issue(t, "spiffe://example.org/ns/b", translog.TokenRequester("T2"))
	cfg := f.config(t, statePath)
	var got []api.Finding
	cfg.Report = func(context.Context, []api.Finding) error { return errors.New("the CA is down") }
	err := monitor.Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "the CA is down") {
		t.Fatalf("a pass that could not report: %v, want the report's error", err)
	}
	// The next run starts with nothing pending (a new process): the
	// finding is reported by the run that finds it.
	f.issue(t, "spiffe://example.org/ns/c", translog.TokenRequester("T3"))
	cfg = f.config(t, statePath)
	cfg.Report = func(_ context.Context, fs []api.Finding) error { got = append(got, fs...); return nil }
	var alerts *monitor.AlertsError
	if err := monitor.Run(context.Background(), cfg); !errors.As(err, &alerts) {
		t.Fatalf("a pass over an unexplained issuance: %v, want an AlertsError", err)
	}
	if len(got) != 1 || got[0].Rule != "unexplained_identity" || got[0].SPIFFEID != "spiffe://example.org/ns/c" || got[0].Serial == "" {
		t.Fatalf("reported %+v, want the one unexplained identity ns/c with its serial", got)
	}
}

// TestRunReportsAgain: following the log, a finding the CA did not take
// is sent again after the next pass, before that pass's own, and once
// taken is not sent again.
func TestRunReportsAgain(t *testing.T) {
	f := newLog(t, nil)
	cfg := f.config(t, filepath.Join(t.TempDir(), "state.json"))
	cfg.Once = false
	waiting := make(chan time.Duration)
	tick := make(chan time.Time)
	cfg.After = func(d time.Duration) <-chan time.Time { waiting <- d; return tick }
	var sent [][]string // the identities of each call, taken or not
	down := true
	cfg.Report = func(_ context.Context, fs []api.Finding) error {
		var ids []string
		for _, x := range fs {
			ids = append(ids, x.SPIFFEID)
		}
		sent = append(sent, ids)
		if down {
			return errors.New("the CA is down")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	f.issue(t, "spiffe://example.org/ns/b", translog.TokenRequester("T2"))
	go func() { done <- monitor.Run(ctx, cfg) }()
	passDone := func() { t.Helper(); passEnded(t, waiting, done) }
	passDone() // ns/b found, not taken
	down = false
	f.issue(t, "spiffe://example.org/ns/c", translog.TokenRequester("T3"))
	tick <- time.Now()
	passDone() // ns/b again, with ns/c
	tick <- time.Now()
	passDone() // nothing new, nothing pending
	cancel()
	<-done
	want := "[[spiffe://example.org/ns/b] [spiffe://example.org/ns/b spiffe://example.org/ns/c]]"
	if got := fmt.Sprint(sent); got != want {
		t.Errorf("reports sent %s, want %s", got, want)
	}
}

// passEnded waits until Run, following the log, ends a pass and waits for
// its clock (a value on waiting); it fails the test if Run returns first
// or no pass ends within the safety net.
func passEnded[T any](t *testing.T, waiting <-chan T, done <-chan error) {
	t.Helper()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("Run returned: %v", err)
	case <-time.After(safetyNet):
		t.Fatal("no pass ended")
	}
}
