package translog_test

// The monitor: each rule fires on a crafted case and stays quiet on normal
// traffic. Normal traffic goes through a real CA; what the CA would never do
// on its own (a renewal that changes identity, a certificate from another
// CA, a lifetime above policy, a burst from one node) is written straight
// into its store with a crafted entry, and the CA then signs a checkpoint
// over it as it would over any entry.

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
	"github.com/mutual-tls/mutual/internal/translog/monitor"
)

// testGrants explains identities, as monitor.Grants does, by the CA's
// tokens (read through the admin API, as `mutual log monitor
// --identity-dir` does) and by registration entries the test declares;
// hidden tokens are unknown to it.
type testGrants struct {
	mu      sync.Mutex
	tokens  map[string]string
	entries map[string]string
	hidden  map[string]bool
}

func newGrants() *testGrants {
	return &testGrants{tokens: map[string]string{}, entries: map[string]string{}, hidden: map[string]bool{}}
}

func (g *testGrants) refresh(t testing.TB, e *caEnv) {
	t.Helper()
	list, err := e.Admin.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, tok := range list.Tokens {
		if !g.hidden[tok.ID] {
			g.tokens[tok.ID] = tok.SPIFFEID
		}
	}
}

func (g *testGrants) Explains(requestedBy translog.Requester, id string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return monitor.NewGrants(g.tokens, g.entries).Explains(requestedBy, id)
}

// strictRules expects the workloads under /ns/, the operator and the CA
// service, DNS names under .internal (and the CA service's own localhost),
// and at most 3 issuances per identity and 2 per node a minute.
const strictRules = `
identities: ["spiffe://example.org/ns/**", "spiffe://example.org/admin/*", "spiffe://example.org/mutual/server"]
dns_suffixes: [".internal", "localhost"]
max_lifetime: 24h
burst:
  window: 1m
  per_identity: 3
  per_node: 2
`

type monitorEnv struct {
	*caEnv
	m      *translog.Monitor
	grants *testGrants
	alerts *prometheus.CounterVec
}

func newMonitor(t testing.TB, e *caEnv, rules string) *monitorEnv {
	t.Helper()
	r, err := translog.ParseRules([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	g := newGrants()
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alerts_total"}, []string{"rule"})
	return &monitorEnv{caEnv: e, grants: g, alerts: vec,
		m: &translog.Monitor{Client: e.logClient(), Rules: r, State: &translog.State{VerifierKey: e.verifierKey}, Grants: g, Alerts: vec}}
}

// step lets the CA sign a checkpoint over everything stored, then runs one
// monitor pass; it fails the test on an error.
func (me *monitorEnv) step(t testing.TB) []translog.Alert {
	t.Helper()
	alerts, err := me.stepErr(t, true)
	if err != nil {
		t.Fatalf("monitor step: %v (alerts %+v)", err, alerts)
	}
	return alerts
}

// stepErr runs one pass, after the CA has signed over everything stored
// when settle is set (not when its checkpoints were tampered with).
func (me *monitorEnv) stepErr(t testing.TB, settle bool) ([]translog.Alert, error) {
	t.Helper()
	me.grants.refresh(t, me.caEnv)
	if settle {
		me.settle(t)
	}
	return me.m.Step(context.Background())
}

func (me *monitorEnv) count(rule string) float64 {
	var m dto.Metric
	me.alerts.WithLabelValues(rule).Write(&m)
	return m.GetCounter().GetValue()
}

func rules(alerts []translog.Alert) []string {
	var out []string
	for _, a := range alerts {
		out = append(out, a.Rule)
	}
	return out
}

// expect checks that exactly the rules want fired (in any order).
func expect(t testing.TB, alerts []translog.Alert, want ...string) {
	t.Helper()
	got := rules(alerts)
	slices.Sort(got)
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Errorf("alerts %v, want %v; details:\n%s", got, w, describe(alerts))
	}
}

func describe(alerts []translog.Alert) string {
	var b strings.Builder
	for _, a := range alerts {
		fmt.Fprintf(&b, "  %s #%d %s %s: %s\n", a.Rule, a.Index, a.SPIFFEID, a.Serial, a.Detail)
	}
	return b.String()
}

// craft stores cert as if the CA had issued it, with its log entry.
func (e *caEnv) craft(t testing.TB, cert *x509.Certificate, requestedBy, node string) int64 {
	t.Helper()
	id, err := x509svid.IDFromCert(cert)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := &store.Certificate{
		Serial: pki.FormatSerial(cert.SerialNumber), SPIFFEID: id.String(),
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, IssuedAt: now,
		DER: cert.Raw, RequestedBy: requestedBy, NodeID: node,
		LogEntry: translog.Entry{Certificate: cert.Raw, RequestedBy: translog.Requester(requestedBy), Node: node, IssuedAt: now.UTC()}.Marshal(),
	}
	if err := e.Store(t).RecordIssuance(context.Background(), rec, "", now); err != nil {
		t.Fatal(err)
	}
	return rec.LogIndex
}

func serialOf(c *x509.Certificate) string { return pki.FormatSerial(c.SerialNumber) }

// TestMonitorQuietOnNormalTraffic: enrollments and renewals within the
// rules raise nothing, with strict rules and with the defaults.
func TestMonitorQuietOnNormalTraffic(t *testing.T) {
	e := startCA(t, "")
	strict := newMonitor(t, e, strictRules)
	defaults := newMonitor(t, e, "")
	web := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{DNSNames: []string{"web.internal"}})
	web = e.renew(t, web)
	e.renew(t, web)
	apiID := e.Enroll(t, "spiffe://example.org/ns/prod/api", api.TokenRequest{DNSNames: []string{"api.prod.internal"}, CertTTL: api.Duration(2 * time.Hour)})
	e.renew(t, apiID)
	e.renew(t, e.peer)
	for name, me := range map[string]*monitorEnv{"strict": strict, "defaults": defaults} {
		expect(t, me.step(t), []string{}...)
		if size := e.logSize(t); me.m.State.Next != size {
			t.Errorf("%s: monitor at %d, log of %d", name, me.m.State.Next, size)
		}
		if len(me.m.State.Issuers) != 1 || me.m.State.Issuers[0] != hex.EncodeToString(e.Intermediate.SubjectKeyId) {
			t.Errorf("%s: learnt issuers %v, want the intermediate's key id", name, me.m.State.Issuers)
		}
		expect(t, me.step(t), []string{}...) // nothing new: nothing said
	}
}

// TestMonitorRules: each rule fires on its crafted case, once, naming the
// entry; normal traffic in between stays quiet.
func TestMonitorRules(t *testing.T) {
	e := startCA(t, "")
	me := newMonitor(t, e, strictRules+fmt.Sprintf("issuers: [%q]\n", hex.EncodeToString(e.Intermediate.SubjectKeyId)))
	expect(t, me.step(t))

	t.Run("unexpected_identity", func(t *testing.T) {
		e.Enroll(t, "spiffe://example.org/rogue/x", api.TokenRequest{})
		alerts := me.step(t)
		expect(t, alerts, "unexpected_identity")
		if len(alerts) == 1 && alerts[0].SPIFFEID != "spiffe://example.org/rogue/x" {
			t.Errorf("alert names %s", alerts[0].SPIFFEID)
		}
	})
	t.Run("unexplained_identity/token_unknown", func(t *testing.T) {
		tok := e.token(t, "spiffe://example.org/ns/prod/db", api.TokenRequest{})
		me.grants.mu.Lock()
		me.grants.hidden[tok.ID] = true
		me.grants.mu.Unlock()
		if _, err := clientRequest(tok.Token); err != nil {
			t.Fatal(err)
		}
		alerts := me.step(t)
		expect(t, alerts, "unexplained_identity")
		if len(alerts) == 1 && !strings.Contains(alerts[0].Detail, tok.ID) {
			t.Errorf("alert detail %q does not name the token", alerts[0].Detail)
		}
	})
	t.Run("unexplained_identity/renewal_changes_identity", func(t *testing.T) {
		victim := e.Enroll(t, "spiffe://example.org/ns/prod/victim", api.TokenRequest{})
		forged := e.Leaf(t, "spiffe://example.org/ns/prod/payments").Leaf()
		idx := e.craft(t, forged, "renew:"+serialOf(victim.Leaf()), "")
		alerts := me.step(t)
		expect(t, alerts, "unexplained_identity")
		if len(alerts) == 1 && (alerts[0].Index != idx || alerts[0].Serial != serialOf(forged)) {
			t.Errorf("alert at #%d %s, want the crafted entry #%d %s", alerts[0].Index, alerts[0].Serial, idx, serialOf(forged))
		}
	})
	// A workload whose path merely contains /admin/ is no operator: ca init
	// and ca admin never issue it, so the monitor must not excuse it.
	t.Run("unexplained_identity/ns_admin_is_not_an_operator", func(t *testing.T) {
		e.craft(t, e.Leaf(t, "spiffe://example.org/ns/admin/x").Leaf(), "ca-admin", "")
		alerts := me.step(t)
		expect(t, alerts, "unexplained_identity")
	})
	// An operator identity that came out of an entry (or the CA's own ID
	// out of a token) is an attack on the trust boundary, even when the
	// entry named it.
	t.Run("reserved_identity/entry_grants_operator", func(t *testing.T) {
		const admin = "spiffe://example.org/admin/mallory"
		me.grants.mu.Lock()
		me.grants.entries["E-admin"] = admin
		me.grants.mu.Unlock()
		e.craft(t, e.Leaf(t, admin).Leaf(), "entry:E-admin", "spiffe://example.org/node/n9")
		alerts := me.step(t)
		expect(t, alerts, "reserved_identity")
	})
	t.Run("unknown_issuer", func(t *testing.T) {
		other := testca.New(t)
		base := e.Enroll(t, "spiffe://example.org/ns/prod/foreign", api.TokenRequest{})
		e.craft(t, e.Leaf(t, "spiffe://example.org/ns/prod/foreign", testca.SignedBy(other)).Leaf(), "renew:"+serialOf(base.Leaf()), "")
		expect(t, me.step(t), "unknown_issuer")
	})
	t.Run("lifetime_above_policy", func(t *testing.T) {
		base := e.Enroll(t, "spiffe://example.org/ns/prod/long", api.TokenRequest{})
		e.craft(t, e.Leaf(t, "spiffe://example.org/ns/prod/long", testca.TTL(72*time.Hour)).Leaf(), "renew:"+serialOf(base.Leaf()), "")
		expect(t, me.step(t), "lifetime_above_policy")
	})
	t.Run("dns_outside_suffixes", func(t *testing.T) {
		e.Enroll(t, "spiffe://example.org/ns/prod/edge", api.TokenRequest{DNSNames: []string{"edge.internal", "edge.example.com"}})
		alerts := me.step(t)
		expect(t, alerts, "dns_outside_suffixes")
		if len(alerts) == 1 && !strings.Contains(alerts[0].Detail, "edge.example.com") {
			t.Errorf("alert detail %q does not name the DNS name", alerts[0].Detail)
		}
	})
	t.Run("burst/per_identity", func(t *testing.T) {
		id := e.Enroll(t, "spiffe://example.org/ns/prod/busy", api.TokenRequest{})
		for i := 0; i < 2; i++ {
			id = e.renew(t, id)
		}
		expect(t, me.step(t)) // 3 in the window: at the limit
		id = e.renew(t, id)
		expect(t, me.step(t), "burst") // the 4th
		e.renew(t, id)
		expect(t, me.step(t)) // said once per burst
	})
	t.Run("burst/per_node", func(t *testing.T) {
		const node = "spiffe://example.org/node/n1"
		for i, w := range []string{"a", "b", "c"} {
			id := "spiffe://example.org/ns/node1/" + w
			entry := fmt.Sprintf("E%d", i)
			me.grants.mu.Lock()
			me.grants.entries[entry] = id
			me.grants.mu.Unlock()
			e.craft(t, e.Leaf(t, id).Leaf(), "entry:"+entry, node)
		}
		alerts := me.step(t)
		expect(t, alerts, "burst")
		if len(alerts) == 1 && !strings.Contains(alerts[0].Detail, node) {
			t.Errorf("alert detail %q does not name the node", alerts[0].Detail)
		}
	})
	t.Run("quiet_on_normal_traffic", func(t *testing.T) {
		calm := e.Enroll(t, "spiffe://example.org/ns/prod/calm", api.TokenRequest{DNSNames: []string{"calm.internal"}})
		e.renew(t, calm)
		expect(t, me.step(t))
	})
	t.Run("entry_invalid", func(t *testing.T) {
		e.Enroll(t, "spiffe://example.org/ns/prod/tampered", api.TokenRequest{})
		last := e.logSize(t) - 1
		orig := e.readEntries(t)[last]
		e.exec(t, "UPDATE log_entries SET data = ? WHERE idx = ?", []byte(`{"v":1}`), last)
		alerts, err := me.stepErr(t, true)
		if err == nil {
			t.Error("a tampered entry did not fail the monitor's step")
		}
		expect(t, alerts, "entry_invalid")
		e.exec(t, "UPDATE log_entries SET data = ? WHERE idx = ?", orig, last)
		expect(t, me.step(t))
	})
	t.Run("checkpoint_inconsistent/rollback", func(t *testing.T) {
		seen := e.settle(t)
		e.Enroll(t, "spiffe://example.org/ns/prod/later", api.TokenRequest{})
		expect(t, me.step(t))
		e.rollBack(t, seen.Size)
		alerts, err := me.stepErr(t, false)
		if !errors.Is(err, translog.ErrRollback) {
			t.Errorf("step after a rollback: %v, want ErrRollback", err)
		}
		expect(t, alerts, "checkpoint_inconsistent")
	})

	for rule, want := range map[string]float64{
		"unexpected_identity": 1, "unexplained_identity": 3, "reserved_identity": 1, "unknown_issuer": 1, "lifetime_above_policy": 1,
		"dns_outside_suffixes": 1, "burst": 2, "entry_invalid": 1, "checkpoint_inconsistent": 1,
	} {
		if got := me.count(rule); got != want {
			t.Errorf("metric alerts{rule=%q} = %v, want %v", rule, got, want)
		}
	}
}

// TestMonitorFork: history rewritten and re-signed with the log's key.
func TestMonitorFork(t *testing.T) {
	e := startCA(t, "")
	certs := e.issueMany(t, 10)
	me := newMonitor(t, e, "")
	expect(t, me.step(t))
	idx := e.entryIndex(t, certs[2])
	entry, err := translog.ParseEntry(e.readEntries(t)[idx])
	if err != nil {
		t.Fatal(err)
	}
	entry.RequestedBy = "token:rewritten"
	e.rewriteHistory(t, idx, entry.Marshal())
	e.issueMany(t, 3)
	alerts, err := me.stepErr(t, true)
	if !errors.Is(err, translog.ErrFork) {
		t.Errorf("step after history was rewritten: %v, want ErrFork", err)
	}
	expect(t, alerts, "checkpoint_inconsistent")
}

// TestMonitorCLI runs `mutual log monitor --once` against a CA with a
// crafted anomaly: it exits non-zero and names the rule in a JSON line.
func TestMonitorCLI(t *testing.T) {
	e := startCA(t, "")
	base := e.Enroll(t, "spiffe://example.org/ns/prod/long", api.TokenRequest{})
	e.settle(t)
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesFile, strictRules)
	args := []string{"log", "monitor", "--once", "--server", e.HTTPURL, "--key-file", filepath.Join(e.Dir, logkey.VerifierFile),
		"--state", filepath.Join(dir, "state.json"), "--rules", rulesFile, "--issuer", filepath.Join(e.Dir, "intermediate", "cert.pem")}
	mustMutual(t, args...)
	e.craft(t, e.Leaf(t, "spiffe://example.org/ns/prod/long", testca.TTL(72*time.Hour)).Leaf(), "renew:"+serialOf(base.Leaf()), "")
	e.settle(t)
	r := runMutual(t, args...)
	if r.code == 0 || !strings.Contains(r.stderr, `"rule":"lifetime_above_policy"`) {
		t.Errorf("mutual log monitor --once over a crafted entry: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// From where it left off: nothing new, nothing said.
	mustMutual(t, args...)
}

// TestMonitorRenewalOfSerialNotInLog: an entry claims to renew a serial that
// the log never held (the monitor has followed it from the first entry).
// No token, entry or earlier certificate explains the identity.
func TestMonitorRenewalOfSerialNotInLog(t *testing.T) {
	e := startCA(t, "")
	me := newMonitor(t, e, strictRules)
	expect(t, me.step(t))
	ghost := e.Leaf(t, "spiffe://example.org/ns/prod/ghost").Leaf()
	e.craft(t, ghost, "renew:"+strings.Repeat("ab", 16), "")
	expect(t, me.step(t), "unexplained_identity")
}

// TestMonitorRenewalAcrossRestart: the monitor resumes from its state file
// (as `mutual log monitor --once` does on every run); a renewal that
// changes the identity of a certificate seen in an earlier run must still
// be caught.
func TestMonitorRenewalAcrossRestart(t *testing.T) {
	e := startCA(t, "")
	first := newMonitor(t, e, strictRules)
	victim := e.Enroll(t, "spiffe://example.org/ns/prod/victim", api.TokenRequest{})
	expect(t, first.step(t))
	statePath := filepath.Join(t.TempDir(), "state.json")
	if err := first.m.State.Save(statePath); err != nil {
		t.Fatal(err)
	}

	st, err := translog.LoadState(statePath)
	if err != nil {
		t.Fatal(err)
	}
	second := newMonitor(t, e, strictRules)
	second.m.State = st
	e.craft(t, e.Leaf(t, "spiffe://example.org/ns/prod/payments").Leaf(), "renew:"+serialOf(victim.Leaf()), "")
	expect(t, second.step(t), "unexplained_identity")
}

func clientRequest(tok string) (*client.Enrollment, error) {
	return client.RequestIdentity(context.Background(), tok, pki.KeyECDSAP256, 0)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
