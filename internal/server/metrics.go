package server

import (
	"crypto/x509"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutual-tls/mutual/internal/metricsserver"
)

type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	issued      *prometheus.CounterVec
	refused     *prometheus.CounterVec
	tokens      prometheus.Counter
	revocations prometheus.Counter
	storeUp     prometheus.Gauge
	feedRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_ca_http_requests_total", Help: "API requests by route and HTTP status.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mutual_ca_http_request_duration_seconds", Help: "API request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_ca_certificates_issued_total", Help: "Certificates issued, by enroll or renew.",
		}, []string{"via"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_ca_requests_refused_total", Help: "Requests refused, by reason code.",
		}, []string{"reason"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mutual_ca_tokens_created_total", Help: "Join tokens created.",
		}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mutual_ca_revocations_total", Help: "Certificates newly revoked.",
		}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mutual_ca_store_up", Help: "1 when the last health check could write to the store.",
		}),
	}
	m.feedRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mutual_ca_feed_streams_refused_total", Help: "Revocation feed streams refused, by the limit reached (identity or total).",
	}, []string{"limit"})
	m.feedRefused.WithLabelValues("identity")
	m.feedRefused.WithLabelValues("total")
	reg.MustRegister(m.requests, m.duration, m.issued, m.refused, m.tokens, m.revocations, m.storeUp, m.feedRefused)
	metricsserver.RegisterRuntime(reg)
	return m
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// tlsLeaf is the leaf of the server's TLS certificate now, nil if none.
func (s *Server) tlsLeaf() *x509.Certificate {
	tc := s.cfg.Certificate()
	if tc == nil || len(tc.Certificate) == 0 {
		return nil
	}
	if tc.Leaf != nil {
		return tc.Leaf
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}
