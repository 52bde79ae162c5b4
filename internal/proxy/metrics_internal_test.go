package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHandshakeMetricHasNoEmptyReason: a successful handshake is counted
// without a reason label; a refusal is counted as a handshake and by its
// reason.
func TestHandshakeMetricHasNoEmptyReason(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "inbound")
	m.handshake("ok", "")
	m.handshake("refused", "not authorized")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			key := mf.GetName() + "{"
			for _, l := range s.GetLabel() {
				if l.GetValue() == "" {
					t.Errorf("%s has an empty label %s", mf.GetName(), l.GetName())
				}
				key += l.GetName() + "=" + l.GetValue() + ","
			}
			if c := s.GetCounter(); c != nil {
				got[key+"}"] = c.GetValue()
			}
		}
	}
	for series, want := range map[string]float64{
		"mutual_proxy_handshakes_total{direction=inbound,outcome=ok,}":                    1,
		"mutual_proxy_handshakes_total{direction=inbound,outcome=refused,}":               1,
		"mutual_proxy_handshake_refusals_total{direction=inbound,reason=not authorized,}": 1,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v (all: %v)", series, got[series], want, got)
		}
	}
}
