package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/internal/metricsserver"
)

// Run is the agent as a process, what `mutual agent` runs: it builds the
// agent (enrolling on first start), serves its metrics on cfg.Metrics,
// runs it until ctx is done, and returns once everything it started has
// stopped and the socket is released.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	a, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	attrs := []any{"node_id", a.NodeID().String(), "socket", "unix://" + cfg.Socket}
	var ms *metricsserver.Server
	if cfg.Metrics != "" {
		if ms, err = metricsserver.Listen(cfg.Metrics, cfg.Registry, nil); err != nil {
			return err
		}
		defer ms.Close()
		attrs = append(attrs, "metrics", fmt.Sprintf("http://%s/metrics", ms.Addr()))
	}
	cfg.Log.Info("agent running", attrs...)
	err = runWithMetrics(ctx, a, ms)
	cfg.Log.Info("agent stopped")
	return err
}

// runWithMetrics runs the agent and, if ms is set, its metrics listener,
// which stays up until the agent has stopped.
func runWithMetrics(ctx context.Context, a *Agent, ms *metricsserver.Server) error {
	var g errgroup.Group
	msCtx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMetrics()
	if ms != nil {
		g.Go(func() error { return ms.Run(msCtx) })
	}
	g.Go(func() error {
		defer stopMetrics()
		return a.Run(ctx)
	})
	return g.Wait()
}
