package translog

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.yaml.in/yaml/v3"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
)

// Rules say what the monitor expects; anything else is an alert.
//
//	identities: ["spiffe://example.org/**"]   # default: the whole trust domain
//	dns_suffixes: [".internal"]                # default: any name
//	max_lifetime: 24h                          # default: 24h (the CA's default maximum)
//	burst:
//	  window: 1m
//	  per_identity: 30
//	  per_node: 500
//	issuers: ["<hex key id of the intermediate>"]  # default: the first issuer seen
type Rules struct {
	Identities  []string      `yaml:"identities"`
	DNSSuffixes []string      `yaml:"dns_suffixes"`
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	Burst       struct {
		Window      time.Duration `yaml:"window"`
		PerIdentity int           `yaml:"per_identity"`
		PerNode     int           `yaml:"per_node"`
	} `yaml:"burst"`
	Issuers []string `yaml:"issuers"`

	patterns []authz.Pattern
}

// ParseRules reads a rules file; empty input gives the defaults.
func ParseRules(data []byte) (*Rules, error) {
	r := &Rules{}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(r); err != nil {
			return nil, fmt.Errorf("monitor rules: %w", err)
		}
	}
	if r.MaxLifetime == 0 {
		r.MaxLifetime = 24 * time.Hour
	}
	if r.Burst.Window == 0 {
		r.Burst.Window = time.Minute
	}
	if r.Burst.PerIdentity == 0 {
		r.Burst.PerIdentity = 30
	}
	if r.Burst.PerNode == 0 {
		r.Burst.PerNode = 500
	}
	for _, s := range r.Identities {
		p, err := authz.ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("monitor rules: identities: %w", err)
		}
		r.patterns = append(r.patterns, p)
	}
	for i, s := range r.DNSSuffixes {
		r.DNSSuffixes[i] = strings.ToLower(s)
	}
	for i, s := range r.Issuers {
		b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
		if err != nil || len(b) < 8 {
			return nil, fmt.Errorf("monitor rules: issuer %q must be the hex Subject Key Identifier of an issuing CA (`mutual inspect` shows it)", s)
		}
		r.Issuers[i] = hex.EncodeToString(b)
	}
	return r, nil
}

// Alert is one thing the monitor did not expect.
type Alert struct {
	Rule     string
	Index    int64
	SPIFFEID string
	Serial   string
	Detail   string
}

// Grants explains identities: the monitor asks it (when set) whether the
// token or entry an entry names granted that identity.
type Grants interface {
	// Explains returns "" when requestedBy (a token or an entry) granted
	// id, else why not.
	Explains(requestedBy Requester, id string) string
}

// Monitor reads every new log entry and reports what the rules did not
// expect.
type Monitor struct {
	Client *Client
	Rules  *Rules
	State  *State
	Grants Grants
	Log    *slog.Logger
	// Alerts counts alerts by rule; nil is fine.
	Alerts *prometheus.CounterVec

	recent  map[string][]time.Time // identity or node → issue times in window
	serials map[string]string      // serial → identity, for renewals seen
}

func (m *Monitor) alert(a Alert) {
	if m.Alerts != nil {
		m.Alerts.WithLabelValues(a.Rule).Inc()
	}
	m.Log.Warn("log monitor alert", "rule", a.Rule, "index", a.Index, "spiffe_id", a.SPIFFEID, "serial", a.Serial, "detail", a.Detail)
}

// Step fetches the latest checkpoint, checks it extends the last one seen,
// and examines every entry since. It returns the alerts raised.
func (m *Monitor) Step(ctx context.Context) ([]Alert, error) {
	if m.recent == nil {
		m.recent, m.serials = map[string][]time.Time{}, map[string]string{}
	}
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
	var alerts []Alert
	raise := func(a Alert) { m.alert(a); alerts = append(alerts, a) }
	cp, err := m.Client.Checkpoint(ctx)
	if err != nil {
		raise(Alert{Rule: "checkpoint_invalid", Detail: err.Error()})
		return alerts, err
	}
	if m.State.Checkpoint != "" {
		old, err := OpenCheckpoint([]byte(m.State.Checkpoint), m.Client.VerifierKey)
		if err == nil {
			if err := m.Client.CheckConsistency(ctx, old, cp); err != nil {
				raise(Alert{Rule: "checkpoint_inconsistent", Detail: err.Error()})
				return alerts, err
			}
		}
	}
	for m.State.Next < cp.Size {
		end := min(cp.Size, m.State.Next+256)
		entries, err := m.Client.Entries(ctx, cp, m.State.Next, end)
		if err != nil {
			raise(Alert{Rule: "entry_invalid", Index: m.State.Next, Detail: err.Error()})
			return alerts, err
		}
		for i, raw := range entries {
			for _, a := range m.check(ctx, cp, m.State.Next+int64(i), raw) {
				raise(a)
			}
		}
		m.State.Next = end
	}
	m.State.Checkpoint = string(cp.Note)
	return alerts, nil
}

// examined is the log entry being checked, and how alerts about it name it.
type examined struct {
	idx    int64
	entry  *Entry
	cert   *x509.Certificate
	id     spiffeid.ID // zero when the certificate carries none
	idStr  string      // id, or "" when none
	serial string
}

// alert is an alert about x under rule.
func (x *examined) alert(rule, detail string) Alert {
	return Alert{Rule: rule, Index: x.idx, SPIFFEID: x.idStr, Serial: x.serial, Detail: detail}
}

// check examines the entry at idx of the tree of cp, one rule after the
// other, and returns what the rules did not expect.
func (m *Monitor) check(ctx context.Context, cp *Checkpoint, idx int64, raw []byte) []Alert {
	x, err := examine(idx, raw)
	if err != nil {
		return []Alert{{Rule: "entry_invalid", Index: idx, Detail: err.Error()}}
	}
	if x.cert.IsCA {
		return m.checkCACert(x)
	}
	out := m.checkIdentity(x)
	out = append(out, m.checkRequester(ctx, cp, x)...)
	m.remember(x)
	out = append(out, m.checkDNSNames(x)...)
	out = append(out, m.checkLifetime(x)...)
	out = append(out, m.checkIssuer(x)...)
	return append(out, m.checkBurst(x)...)
}

// checkCACert: a CA certificate enters the log only through a key
// rotation (ca-rotate-root, ca-rotate-intermediate). A new intermediate
// becomes a known issuer, unless the rules pin the issuers: then they must
// list it.
func (m *Monitor) checkCACert(x *examined) []Alert {
	switch by := x.entry.RequestedBy; by {
	case CARequester("rotate-root"):
		return nil
	case CARequester("rotate-intermediate"):
		skid := hex.EncodeToString(x.cert.SubjectKeyId)
		switch {
		case len(m.Rules.Issuers) > 0 && !slices.Contains(m.Rules.Issuers, skid):
			return []Alert{x.alert("unknown_issuer", fmt.Sprintf("a rotation introduced the intermediate %q (key id %s), which the rules' issuers do not list: add it once the rotation is known to be yours", x.cert.Subject.CommonName, skid))}
		case len(m.Rules.Issuers) == 0 && !slices.Contains(m.State.Issuers, skid):
			m.State.Issuers = append(m.State.Issuers, skid)
			m.Log.Info("log monitor: a rotation introduced an issuing intermediate", "index", x.idx, "subject", x.cert.Subject.CommonName, "key_id", skid)
		}
		return nil
	default:
		return []Alert{x.alert("unexplained_identity", fmt.Sprintf("a CA certificate (%q) requested by %s; only a key rotation (ca-rotate-root, ca-rotate-intermediate) records one", x.cert.Subject.CommonName, by))}
	}
}

// examine parses a log entry and its certificate.
func examine(idx int64, raw []byte) (*examined, error) {
	e, err := ParseEntry(raw)
	if err != nil {
		return nil, err
	}
	c, err := e.Cert()
	if err != nil {
		return nil, err
	}
	x := &examined{idx: idx, entry: e, cert: c, serial: pki.FormatSerial(c.SerialNumber)}
	if id, err := x509svid.IDFromCert(c); err == nil { // else zero: checkIdentity says so
		x.id, x.idStr = id, id.String()
	}
	return x, nil
}

// checkIdentity: the certificate names a SPIFFE ID that the rules'
// identities patterns (when any) expect.
func (m *Monitor) checkIdentity(x *examined) []Alert {
	if x.id.IsZero() {
		return []Alert{x.alert("no_identity", "the certificate carries no SPIFFE ID")}
	}
	if len(m.Rules.patterns) > 0 && !slices.ContainsFunc(m.Rules.patterns, func(p authz.Pattern) bool { return p.Match(x.id) }) {
		return []Alert{x.alert("unexpected_identity", "no identities pattern of the rules matches it")}
	}
	return nil
}

// checkRequester: who asked explains the identity. A token or entry must
// have granted it (and may never grant a reserved one); a renewal keeps
// the identity of the certificate it renews; the CA itself makes only
// operator and server identities.
func (m *Monitor) checkRequester(ctx context.Context, cp *Checkpoint, x *examined) []Alert {
	by := x.entry.RequestedBy
	switch by.Kind() {
	case RequestedByRenewal:
		prev, why := m.renewedIdentity(ctx, cp, by.Ref(), x.idx)
		switch {
		case why != "":
			return []Alert{x.alert("unexplained_identity", why)}
		case prev != x.idStr:
			return []Alert{x.alert("unexplained_identity", fmt.Sprintf("renewal of %s, which was %s", by, prev))}
		}
	case RequestedByToken, RequestedByEntry:
		var out []Alert
		// The CA's own ID and operators are never granted by a token or
		// an entry, nodes never by an entry (policy.CheckGrantable).
		k := pki.KindOf(x.id)
		if k == pki.KindAdmin || k == pki.KindServer || k == pki.KindReserved || (k == pki.KindNode && by.Kind() == RequestedByEntry) {
			out = append(out, x.alert("reserved_identity", fmt.Sprintf("a %s identity issued through %s, which may not grant it", k, by)))
		}
		if m.Grants != nil {
			if why := m.Grants.Explains(by, x.idStr); why != "" {
				out = append(out, x.alert("unexplained_identity", why))
			}
		}
		return out
	case RequestedByCA:
		if k := pki.KindOf(x.id); x.idStr == "" || (k != pki.KindAdmin && k != pki.KindServer) {
			return []Alert{x.alert("unexplained_identity", "issued by "+by.String()+" but not an operator or server identity")}
		}
	default:
		return []Alert{x.alert("unexplained_identity", fmt.Sprintf("unknown requester %q", by.String()))}
	}
	return nil
}

// renewedIdentity is the identity of the certificate with serial that a
// renewal at index before names: remembered from this run, else found in
// the log itself (authenticated against the tree), where it must be
// earlier. why says what is wrong when it cannot be found.
func (m *Monitor) renewedIdentity(ctx context.Context, cp *Checkpoint, serial string, before int64) (id, why string) {
	if prev, ok := m.serials[serial]; ok {
		return prev, ""
	}
	return m.lookupRenewed(ctx, cp, serial, before)
}

// remember keeps the identity of x's serial for the renewals that follow,
// within a bound (forgotten ones are looked up in the log).
func (m *Monitor) remember(x *examined) {
	m.serials[x.serial] = x.idStr
	if len(m.serials) > 200_000 {
		m.serials = map[string]string{}
	}
}

// checkDNSNames: every DNS name is under one of the rules' suffixes (when
// any), or is a suffix itself without its leading dot.
func (m *Monitor) checkDNSNames(x *examined) []Alert {
	if len(m.Rules.DNSSuffixes) == 0 {
		return nil
	}
	var out []Alert
	for _, d := range x.cert.DNSNames {
		name := strings.ToLower(d)
		if !slices.ContainsFunc(m.Rules.DNSSuffixes, func(s string) bool {
			return strings.HasSuffix(name, s) || name == strings.TrimPrefix(s, ".")
		}) {
			out = append(out, x.alert("dns_outside_suffixes", fmt.Sprintf("DNS name %q is outside %s", d, strings.Join(m.Rules.DNSSuffixes, ", "))))
		}
	}
	return out
}

// checkLifetime: the lifetime is within the rules' maximum (with two
// minutes for the CA's backdating). ca init's own certificates are
// long-lived by design.
func (m *Monitor) checkLifetime(x *examined) []Alert {
	life := x.cert.NotAfter.Sub(x.cert.NotBefore)
	if life <= m.Rules.MaxLifetime+2*time.Minute || x.entry.RequestedBy.Kind() == RequestedByCA {
		return nil
	}
	return []Alert{x.alert("lifetime_above_policy", fmt.Sprintf("lifetime %s exceeds %s", life.Round(time.Second), m.Rules.MaxLifetime))}
}

// checkIssuer: a known issuing CA signed the certificate.
func (m *Monitor) checkIssuer(x *examined) []Alert {
	if why, ok := m.issuer(x.cert); !ok {
		return []Alert{x.alert("unknown_issuer", why)}
	}
	return nil
}

// checkBurst: neither the identity nor the node it was obtained through
// went over the rules' issuances per window. A burst is said once, when
// the count first exceeds the limit.
func (m *Monitor) checkBurst(x *examined) []Alert {
	type counted struct {
		key, name string
		limit     int
	}
	keys := []counted{{"id:" + x.idStr, x.idStr, m.Rules.Burst.PerIdentity}}
	if x.entry.Node != "" {
		keys = append(keys, counted{"node:" + x.entry.Node, x.entry.Node, m.Rules.Burst.PerNode})
	}
	var out []Alert
	at := x.entry.IssuedAt
	for _, k := range keys {
		times := append(m.recent[k.key], at)
		cut := 0
		for cut < len(times) && at.Sub(times[cut]) > m.Rules.Burst.Window {
			cut++
		}
		times = times[cut:]
		m.recent[k.key] = times
		if len(times) == k.limit+1 {
			out = append(out, x.alert("burst", fmt.Sprintf("%d issuances for %s within %s", len(times), k.name, m.Rules.Burst.Window)))
		}
	}
	return out
}

// issuer checks the certificate's issuer (by its Authority Key Identifier)
// against the known issuing CAs: the rules' list, else the one learnt from
// the first entry.
func (m *Monitor) issuer(c *x509.Certificate) (string, bool) {
	aki := hex.EncodeToString(c.AuthorityKeyId)
	known := m.Rules.Issuers
	if len(known) == 0 {
		if len(m.State.Issuers) == 0 {
			m.State.Issuers = []string{aki}
			return "", true
		}
		known = m.State.Issuers
	}
	if slices.Contains(known, aki) {
		return "", true
	}
	return fmt.Sprintf("issued by a CA key (key id %s, issuer %q) that is not the known intermediate (%s)", aki, c.Issuer.String(), strings.Join(known, ", ")), false
}

// lookupRenewed finds the identity of the certificate a renewal names, in
// the log before index before.
func (m *Monitor) lookupRenewed(ctx context.Context, cp *Checkpoint, serial string, before int64) (string, string) {
	at, err := m.Client.Lookup(ctx, serial)
	if err != nil {
		return "", fmt.Sprintf("renewal of certificate %s, which is not in the log", serial)
	}
	if at >= before {
		return "", fmt.Sprintf("renewal of certificate %s, which the log records only later (entry %d)", serial, at)
	}
	raw, err := m.Client.Entries(ctx, cp, at, at+1)
	if err != nil {
		return "", fmt.Sprintf("renewal of certificate %s: its entry %d cannot be read: %v", serial, at, err)
	}
	e, err := ParseEntry(raw[0])
	if err != nil {
		return "", fmt.Sprintf("renewal of certificate %s: entry %d: %v", serial, at, err)
	}
	c, err := e.Cert()
	if err != nil || pki.FormatSerial(c.SerialNumber) != serial {
		return "", fmt.Sprintf("renewal of certificate %s, but log entry %d holds another certificate", serial, at)
	}
	id, err := x509svid.IDFromCert(c)
	if err != nil {
		return "", fmt.Sprintf("renewal of certificate %s, which carries no SPIFFE ID", serial)
	}
	return id.String(), ""
}
