package dashboard

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
)

// overviewData is the estate at a glance.
type overviewData struct {
	// Live counts unexpired, unrevoked certificates by kind.
	Live      []kindCount
	LiveTotal int
	// Hours and Days chart when live certificates expire.
	Hours, Days timeline
	// Revocations are the latest.
	Revocations []api.CertificateInfo
	SummaryErr  string
	Health      *client.Health
	HealthErr   string
	CRL         *crlView
	CRLErr      string
	// CAs are the operator's chain above its own certificate.
	CAs []caView
	// Alerts are the log monitor's latest findings.
	Alerts findingsView
}

// alertsShown bounds the monitor findings the overview lists.
const alertsShown = 5

type kindCount struct {
	Kind  string
	Count int
}

// crlView is the CA's current CRL, as served.
type crlView struct {
	Number     string
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
	Stale      bool
}

// caView is one CA certificate's lifetime.
type caView struct {
	Role, Subject string
	NotAfter      time.Time
	// Soon is within 30 days of expiry.
	Soon bool
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := d.cfg.Now()
	var o overviewData
	if sum, err := d.cfg.CA.Summary(ctx); err != nil {
		o.SummaryErr = err.Error()
	} else {
		o.fromSummary(sum)
	}
	if h, err := d.cfg.CA.Health(ctx); err != nil {
		o.HealthErr = err.Error()
	} else {
		o.Health = h
	}
	issuer := d.cfg.Identity.Chain[1]
	if crl, err := d.cfg.CA.CRL(ctx, issuer); err != nil {
		o.CRLErr = err.Error()
	} else {
		o.CRL = &crlView{ThisUpdate: crl.ThisUpdate, NextUpdate: crl.NextUpdate, Entries: len(crl.RevokedCertificateEntries),
			Stale: !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate)}
		if crl.Number != nil {
			o.CRL.Number = crl.Number.String()
		}
	}
	o.Alerts = d.findings(ctx, alertsShown)
	o.CAs = append(caViews("intermediate", d.cfg.Identity.Chain[1:], now), caViews("root", d.cfg.Identity.Roots, now)...)
	d.render(w, r, http.StatusOK, "overview", "Overview", o)
}

func caViews(role string, certs []*x509.Certificate, now time.Time) []caView {
	var out []caView
	for _, c := range certs {
		out = append(out, caView{Role: role, Subject: c.Subject.CommonName, NotAfter: c.NotAfter, Soon: c.NotAfter.Sub(now) < 30*24*time.Hour})
	}
	return out
}

// fromSummary fills the counts, the charts and the revocations.
func (o *overviewData) fromSummary(sum *api.Summary) {
	for k, n := range sum.LiveByKind {
		o.Live = append(o.Live, kindCount{Kind: k, Count: n})
		o.LiveTotal += n
	}
	slices.SortFunc(o.Live, func(a, b kindCount) int { return cmp.Or(b.Count-a.Count, strings.Compare(a.Kind, b.Kind)) })
	o.Hours = newTimeline(sum.ExpiringHourly, "h", 3, o.LiveTotal)
	o.Days = newTimeline(sum.ExpiringDaily, "d", 1, o.LiveTotal)
	o.Revocations = sum.RecentRevocations
}

// timeline is a bar chart of expiries in consecutive buckets from now,
// laid out for an SVG of chartWidth × chartHeight.
type timeline struct {
	Bars []bar
	Max  int
	// Later counts live certificates expiring after the last bucket.
	Later int
}

type bar struct {
	// Label is the bucket's end from now ("≤3h"); Shown says it is drawn
	// under the bar (the title always has it).
	Label        string
	Shown        bool
	Count        int
	X, Y, W, H   int
	LabelX, TopY int
}

const chartWidth, chartBase = 720, 130

// newTimeline lays out counts (bucket i: expiring within i+1 units), every
// labelEvery-th bar labelled, of total live certificates.
func newTimeline(counts []int, unit string, labelEvery, total int) timeline {
	var t timeline
	if len(counts) == 0 {
		return t
	}
	t.Later = total
	for _, n := range counts {
		t.Max = max(t.Max, n)
		t.Later -= n
	}
	w := chartWidth / len(counts)
	for i, n := range counts {
		b := bar{Label: fmt.Sprintf("≤%d%s", i+1, unit), Shown: (i+1)%labelEvery == 0, Count: n, X: i*w + 2, W: w - 4}
		if t.Max > 0 {
			b.H = n * (chartBase - 20) / t.Max
		}
		if n > 0 && b.H == 0 {
			b.H = 1
		}
		b.Y = chartBase - b.H
		b.LabelX = b.X + b.W/2
		b.TopY = b.Y - 4
		t.Bars = append(t.Bars, b)
	}
	return t
}

// String describes the timeline in words, for the chart's label.
func (t timeline) String() string {
	return fmt.Sprintf("%d bars, largest %d", len(t.Bars), t.Max)
}
