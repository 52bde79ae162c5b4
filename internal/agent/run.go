package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/internal/metricsserver"
)

// Run is the agent as a process, what `mutual agent` runs: it serves its
// metrics and health on cfg.Metrics from the start, builds the agent
// (enrolling on first start), runs it until ctx is done, and returns once
// everything it started has stopped and the socket is released.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	var built atomic.Pointer[Agent]
	var metrics errgroup.Group
	msCtx, stopMetrics := context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		stopMetrics()
		metrics.Wait()
	}()
	var attrs []any
	if cfg.Metrics != "" {
		ms, err := metricsserver.Listen(cfg.Metrics, cfg.Registry, metricsserver.Health(func() error {
			if a := built.Load(); a != nil {
				return a.Ready()
			}
			return errStarting
		}, nil))
		if err != nil {
			return err
		}
		metrics.Go(func() error { return ms.Run(msCtx) })
		attrs = append(attrs, "metrics", fmt.Sprintf("http://%s/metrics", ms.Addr()))
	}
	a, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	built.Store(a)
	attrs = append([]any{"node_id", a.NodeID().String(), "socket", "unix://" + cfg.Socket}, attrs...)
	cfg.Log.Info("agent running", attrs...)
	err = a.Run(ctx)
	stopMetrics() // the metrics listener stays up until the agent has stopped
	if merr := metrics.Wait(); err == nil {
		err = merr
	}
	cfg.Log.Info("agent stopped")
	return err
}

// errStarting is /readyz before the agent has its node identity.
var errStarting = errors.New("starting: loading the node identity (enrolling with the join token on first start)")

// Ready reports whether the agent can hand out identities that peers will
// accept: its node certificate is within its validity and it knows the
// revocation status (the CA's feed is connected or its last CRL is
// current). The error says what is missing; it is /readyz's answer.
func (a *Agent) Ready() error {
	if a.nodeExpired() {
		return fmt.Errorf("the node certificate of %s has expired: write a new join token for it to --token-file", a.NodeID())
	}
	w := a.revocations.Load()
	if w == nil {
		return errors.New("starting: the revocation feed is not followed yet")
	}
	if err := w.Current(); err != nil {
		return err
	}
	return nil
}
