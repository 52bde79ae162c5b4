// Package monitor runs the issuance log's monitor as a long-lived process:
// passes of translog.Monitor over every new entry, one per interval, the
// state saved after each so that the next run resumes where this one
// stopped, the CA's join tokens and registration entries read before each
// so that an identity is explained by what granted it, and Prometheus
// metrics of what was found.
//
//	err := monitor.Run(ctx, monitor.Config{Client: cl, State: st, StatePath: path, Once: true})
//	var alerts *monitor.AlertsError
//	if errors.As(err, &alerts) { ... alerts.Count entries the rules did not expect ... }
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/metricsserver"
	"github.com/mutual-tls/mutual/internal/translog"
)

// Config configures Run. Zero values are the documented defaults.
type Config struct {
	// Client reads and authenticates the log (required).
	Client *translog.Client
	// Rules say what the monitor expects; nil means the defaults
	// (translog.ParseRules of nothing).
	Rules *translog.Rules
	// State is where the last run stopped (required); Run updates it.
	State *translog.State
	// StatePath is where State is saved after every pass (required).
	StatePath string
	// Admin opens a client of the CA's admin API before each pass, so
	// that identities are checked against the tokens and entries that
	// granted them; nil checks identities against the rules only. A pass
	// whose grants cannot be read goes on with the rules only, and says so.
	Admin func() (AdminAPI, error)
	// Report, when set, sends each pass's alerts to the CA (POST
	// /v1/log/findings, where the dashboard shows them), at most
	// api.MaxFindingsPerReport at a time; alerts it could not send go
	// again with the next pass's (up to maxPending).
	Report func(ctx context.Context, findings []api.Finding) error
	// Interval is the time between passes; zero means 5 seconds.
	Interval time.Duration
	// Once makes Run return after one pass: with an *AlertsError when the
	// pass raised alerts, else with the pass's error.
	Once bool
	// Log receives alerts and progress; nil discards them.
	Log *slog.Logger
	// Registerer, when set, gets the monitor's metrics: the counters
	// mutual_log_monitor_alerts_total{rule} and
	// mutual_log_monitor_entries_checked_total, and the gauge
	// mutual_log_monitor_next_index (where the monitor is in the log).
	Registerer prometheus.Registerer
	// MetricsListener, when set, serves MetricsHandler at GET /metrics,
	// and /livez and /readyz (ready once a pass has read the log, and
	// while the last one did), while Run runs; Run closes it before it
	// returns.
	MetricsListener net.Listener
	// MetricsHandler is what MetricsListener serves (required with it),
	// typically promhttp's handler of the registry behind Registerer.
	MetricsHandler http.Handler
	// After waits between passes; nil means time.After. Tests move time
	// with it instead of sleeping.
	After func(time.Duration) <-chan time.Time
}

// AlertsError is what Run returns after a single pass (Config.Once) that
// raised alerts.
type AlertsError struct {
	// Count is the number of alerts raised.
	Count int
}

// Error says how many alerts there were and where they were reported.
func (e *AlertsError) Error() string {
	return fmt.Sprintf("%d alert(s): see the log lines above", e.Count)
}

// runner is one Run: the monitor and what it reports to.
type runner struct {
	cfg     Config
	m       *translog.Monitor
	checked prometheus.Counter
	next    prometheus.Gauge

	// pending are alerts not yet reported (Config.Report).
	pending []api.Finding

	mu      sync.Mutex
	passed  bool  // a pass has finished
	lastErr error // of the last pass
}

// Run follows the log until ctx ends (returning nil), the log is found to
// have forked or rolled back (translog.ErrFork, translog.ErrRollback), the
// state cannot be saved, the metrics listener fails, or after one pass
// with Config.Once. Other failures of a pass are logged and the next pass
// tries again. The only goroutine Run starts, the metrics server, has
// ended when Run returns.
func Run(ctx context.Context, cfg Config) error {
	r, err := newRunner(cfg)
	if err != nil {
		if cfg.MetricsListener != nil {
			cfg.MetricsListener.Close()
		}
		return err
	}
	if cfg.MetricsListener == nil {
		return r.follow(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", cfg.MetricsHandler)
	for path, h := range metricsserver.Health(r.ready, nil) {
		mux.Handle("GET "+path, h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() {
		served <- srv.Serve(cfg.MetricsListener)
		cancel() // a metrics listener that failed ends the run
	}()
	err = r.follow(ctx)
	srv.Close()
	if serr := <-served; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = fmt.Errorf("log monitor metrics on %s: %w", cfg.MetricsListener.Addr(), serr)
	}
	return err
}

// follow runs the passes: Run without the metrics server.
func (r *runner) follow(ctx context.Context) error {
	total := 0
	for {
		n, err := r.pass(ctx)
		total += n
		switch {
		case errors.Is(err, errStateNotSaved), errors.Is(err, translog.ErrFork), errors.Is(err, translog.ErrRollback):
			return err
		case err != nil:
			r.cfg.Log.Warn("monitor step failed; retrying", "error", err.Error())
		}
		if r.cfg.Once {
			r.cfg.Log.Info("monitor pass done", "next_index", r.cfg.State.Next, "alerts", total)
			if total > 0 && err != nil {
				return errors.Join(&AlertsError{Count: total}, err)
			}
			if total > 0 {
				return &AlertsError{Count: total}
			}
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.After(r.cfg.Interval):
		}
	}
}

// newRunner checks cfg, fills in its defaults, and registers the metrics.
func newRunner(cfg Config) (*runner, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("log monitor: no log client")
	case cfg.State == nil || cfg.StatePath == "":
		return nil, errors.New("log monitor: no state file to resume from and save to")
	case cfg.MetricsListener != nil && cfg.MetricsHandler == nil:
		return nil, errors.New("log monitor: a metrics listener and nothing to serve on it")
	}
	if cfg.Rules == nil {
		rules, err := translog.ParseRules(nil)
		if err != nil {
			return nil, err
		}
		cfg.Rules = rules
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	alerts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mutual_log_monitor_alerts_total", Help: "Log entries or checkpoints the rules did not expect, by rule."}, []string{"rule"})
	checked := prometheus.NewCounter(prometheus.CounterOpts{Name: "mutual_log_monitor_entries_checked_total", Help: "Log entries examined by this monitor process."})
	next := prometheus.NewGauge(prometheus.GaugeOpts{Name: "mutual_log_monitor_next_index", Help: "Index of the next log entry to examine: every entry before it has been checked."})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{alerts, checked, next} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("log monitor metrics: %w", err)
			}
		}
	}
	m := &translog.Monitor{Client: cfg.Client, Rules: cfg.Rules, State: cfg.State, Log: cfg.Log, Alerts: alerts}
	return &runner{cfg: cfg, m: m, checked: checked, next: next}, nil
}

// errStateNotSaved marks a pass whose state could not be saved: going on
// would check the same entries again at the next start.
var errStateNotSaved = errors.New("the monitor's state could not be saved")

// pass refreshes the grants, runs one monitor step and saves the state.
// It returns the number of alerts raised.
func (r *runner) pass(ctx context.Context) (int, error) {
	r.refreshGrants(ctx)
	before := r.cfg.State.Next
	found, err := r.m.Step(ctx)
	if after := r.cfg.State.Next; after > before {
		r.checked.Add(float64(after - before))
	}
	r.next.Set(float64(r.cfg.State.Next))
	if serr := r.cfg.State.Save(r.cfg.StatePath); serr != nil {
		err = fmt.Errorf("%w: %w", errStateNotSaved, serr)
	}
	if rerr := r.report(ctx, found); rerr != nil && r.cfg.Once {
		err = errors.Join(err, rerr)
	}
	r.mu.Lock()
	r.passed, r.lastErr = true, err
	r.mu.Unlock()
	return len(found), err
}

// maxPending bounds the alerts kept for Config.Report while the CA does
// not take them; beyond it the oldest are dropped (they are in the log
// lines and the metrics still).
const maxPending = 10_000

// report sends the alerts found, after any left from earlier passes.
func (r *runner) report(ctx context.Context, found []translog.Alert) error {
	if r.cfg.Report == nil {
		return nil
	}
	for _, a := range found {
		r.pending = append(r.pending, api.Finding{Rule: a.Rule, LogIndex: a.Index, SPIFFEID: a.SPIFFEID, Serial: a.Serial, Detail: a.Detail})
	}
	if drop := len(r.pending) - maxPending; drop > 0 {
		r.cfg.Log.Warn("too many monitor findings the CA has not taken; dropping the oldest", "dropped", drop)
		r.pending = r.pending[drop:]
	}
	for len(r.pending) > 0 {
		n := min(len(r.pending), api.MaxFindingsPerReport)
		if err := r.cfg.Report(ctx, r.pending[:n]); err != nil {
			r.cfg.Log.Warn("cannot report findings to the CA; trying again after the next pass", "pending", len(r.pending), "error", err.Error())
			return fmt.Errorf("report %d finding(s) to the CA: %w", len(r.pending), err)
		}
		r.pending = r.pending[n:]
	}
	return nil
}

// ready is /readyz: a pass has read the log, and the last one did.
func (r *runner) ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.passed:
		return errors.New("starting: the first pass over the log has not finished")
	case r.lastErr != nil:
		return fmt.Errorf("the last pass failed (is the CA reachable?): %w", r.lastErr)
	}
	return nil
}

// refreshGrants reads the CA's tokens and entries for this pass, when an
// admin client is configured.
func (r *runner) refreshGrants(ctx context.Context) {
	if r.cfg.Admin == nil {
		return
	}
	g, err := r.loadGrants(ctx)
	if err != nil {
		r.cfg.Log.Warn("cannot read tokens and entries from the CA; identities are checked against the rules only", "error", err.Error())
		r.m.Grants = nil
		return
	}
	r.m.Grants = g
}

func (r *runner) loadGrants(ctx context.Context) (*Grants, error) {
	ca, err := r.cfg.Admin()
	if err != nil {
		return nil, err
	}
	defer ca.CloseIdleConnections()
	return LoadGrants(ctx, ca)
}
