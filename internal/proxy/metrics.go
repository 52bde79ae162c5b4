package proxy

import (
	"crypto/x509"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are a proxy's Prometheus series.
type Metrics struct {
	connections *prometheus.CounterVec
	active      prometheus.Gauge
	handshakes  *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	requests    *prometheus.HistogramVec
	byCode      sync.Map // int status code → prometheus.Observer of requests
	certExpiry  prometheus.Gauge
	reloads     *prometheus.CounterVec
	timeouts    *prometheus.CounterVec
}

// NewMetrics registers a proxy's metrics on reg, labelled with the proxy's
// direction ("inbound" or "outbound").
func NewMetrics(reg prometheus.Registerer, direction string) *Metrics {
	l := prometheus.Labels{"direction": direction}
	m := &Metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_proxy_connections_total", Help: "Connections accepted, by outcome.", ConstLabels: l,
		}, []string{"outcome"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mutual_proxy_active_connections", Help: "Connections open now.", ConstLabels: l,
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_proxy_handshakes_total", Help: "TLS handshakes by outcome: ok or refused.", ConstLabels: l,
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_proxy_handshake_refusals_total", Help: "Refused TLS handshakes by reason (each is also a handshake with outcome refused).", ConstLabels: l,
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_proxy_bytes_total", Help: "Bytes relayed: to_target or to_peer.", ConstLabels: l,
		}, []string{"flow"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mutual_proxy_request_duration_seconds", Help: "HTTP request latency through the proxy, by status code.", ConstLabels: l,
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"code"}),
		certExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mutual_proxy_certificate_expiry_timestamp_seconds", Help: "NotAfter of the certificate the proxy presents.", ConstLabels: l,
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_proxy_policy_reloads_total", Help: "Policy file reloads, by result.", ConstLabels: l,
		}, []string{"result"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mutual_proxy_timeouts_total", Help: "HTTP exchanges ended because a client or the service stopped making progress, by stage: idle, request_head, request_body, response_write, service_dial, service_write, service_response, service_body.", ConstLabels: l,
		}, []string{"stage"}),
	}
	reg.MustRegister(m.connections, m.active, m.handshakes, m.refusals, m.bytes, m.requests, m.certExpiry, m.reloads, m.timeouts)
	return m
}

// ObserveCertificate records the presented certificate's expiry.
func (m *Metrics) ObserveCertificate(c *x509.Certificate) {
	if m != nil && c != nil {
		m.certExpiry.Set(float64(c.NotAfter.Unix()))
	}
}

// PolicyReloaded counts a policy reload.
func (m *Metrics) PolicyReloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("error").Inc()
	}
}

// handshake counts a handshake; a refusal (reason set) is also counted by
// its reason, so that a successful one carries no empty reason label.
func (m *Metrics) handshake(outcome, reason string) {
	if m == nil {
		return
	}
	m.handshakes.WithLabelValues(outcome).Inc()
	if reason != "" {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) conn(outcome string) {
	if m != nil {
		m.connections.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) timeout(stage string) {
	if m != nil {
		m.timeouts.WithLabelValues(stage).Inc()
	}
}

func (m *Metrics) request(code int, d time.Duration) {
	if m == nil {
		return
	}
	// One series per status code: look it up once, not per request.
	o, ok := m.byCode.Load(code)
	if !ok {
		o, _ = m.byCode.LoadOrStore(code, m.requests.WithLabelValues(strconv.Itoa(code)))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}
