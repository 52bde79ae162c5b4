// Package metricsserver serves a Prometheus registry as text on its own
// listener, the way every long-running mutual command (agent, proxy,
// monitor) exposes its metrics: GET /metrics, plus any read-only pages the
// command adds (the proxy's /migration, the health pages of Health).
package metricsserver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mutual-tls/mutual/internal/buildinfo"
)

// Server is a bound metrics listener. Listen makes one, Run (or Serve)
// serves it.
type Server struct {
	ln net.Listener
	hs *http.Server
}

// Listen binds addr for reg's /metrics and the extra GET handlers, by path.
// It adds the Go runtime and process collectors to reg. It starts nothing.
func Listen(addr string, reg *prometheus.Registry, extra map[string]http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	RegisterRuntime(reg)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	for path, h := range extra {
		mux.Handle("GET "+path, h)
	}
	return &Server{ln: ln, hs: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the address bound, with the port chosen when addr asked for 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until Close, then returns nil.
func (s *Server) Serve() error {
	if err := s.hs.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener %s: %w", s.Addr(), err)
	}
	return nil
}

// Run serves until ctx is done, then closes the listener and returns nil.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		s.Close()
		return <-errc
	}
}

// Close stops serving and releases the listener; it is also how a Server
// that never ran is released.
func (s *Server) Close() error {
	s.hs.Close()
	s.ln.Close()
	return nil
}

// Health adds /livez and /readyz to the extra pages (a new map; extra is
// not changed). /livez answers 200 "ok" whenever the listener serves: the
// process is alive. /readyz answers 200 "ready" when ready returns nil, and
// otherwise 503 with the reason on one line, so that a load balancer or an
// operator sees why.
func Health(ready func() error, extra map[string]http.Handler) map[string]http.Handler {
	pages := map[string]http.Handler{
		"/livez": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "ok\n")
		}),
		"/readyz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, "not ready: "+strings.Join(strings.Fields(err.Error()), " ")+"\n")
				return
			}
			io.WriteString(w, "ready\n")
		}),
	}
	for path, h := range extra {
		pages[path] = h
	}
	return pages
}

// CertificateExpiry is a gauge named name of the NotAfter, in Unix
// seconds, of the certificate cert returns, read at every scrape so that a
// renewed certificate shows at once; no sample while cert returns nil.
func CertificateExpiry(name, help string, cert func() *x509.Certificate) prometheus.Collector {
	return certExpiry{desc: prometheus.NewDesc(name, help, nil, nil), cert: cert}
}

type certExpiry struct {
	desc *prometheus.Desc
	cert func() *x509.Certificate
}

func (c certExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c certExpiry) Collect(ch chan<- prometheus.Metric) {
	if cert := c.cert(); cert != nil {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(cert.NotAfter.Unix()))
	}
}

// RegisterRuntime adds the Go runtime (go_*) and process (process_*)
// collectors to reg, unless it has them already.
func RegisterRuntime(reg prometheus.Registerer) {
	buildinfo.Register(reg)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			panic(err)
		}
	}
}
