package agent

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	svids     prometheus.Gauge
	expiry    *prometheus.GaugeVec
	expiring  *prometheus.GaugeVec
	rotations *prometheus.CounterVec
	syncs     *prometheus.CounterVec
	requests  *prometheus.CounterVec
	writes    *prometheus.CounterVec

	nodeExpiry   prometheus.Gauge
	nodeExpiring prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		svids: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mutual_agent_entries", Help: "Registration entries granted to this node."}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mutual_agent_svid_expiry_timestamp_seconds",
			Help: "NotAfter of each workload certificate held."}, []string{"spiffe_id"}),
		expiring: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mutual_agent_svid_expiring",
			Help: "1 when a workload certificate has less than a quarter of its life left (renewal is failing)."}, []string{"spiffe_id"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mutual_agent_rotations_total",
			Help: "Certificate renewals by kind (node, workload) and result."}, []string{"kind", "result"}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mutual_agent_syncs_total",
			Help: "Entry syncs with the CA by result."}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mutual_agent_workload_api_requests_total",
			Help: "Workload API calls by outcome."}, []string{"outcome"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mutual_agent_file_writes_total",
			Help: "Identity directories written for --write, by result."}, []string{"result"}),
	}
	m.nodeExpiry = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mutual_agent_node_expiry_timestamp_seconds",
		Help: "NotAfter of the node certificate."})
	m.nodeExpiring = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mutual_agent_node_expiring",
		Help: "1 when the node certificate has less than a quarter of its life left (renewal is failing); past NotAfter the node must be enrolled again."})
	reg.MustRegister(m.svids, m.expiry, m.expiring, m.rotations, m.syncs, m.requests, m.writes, m.nodeExpiry, m.nodeExpiring)
	return m
}
