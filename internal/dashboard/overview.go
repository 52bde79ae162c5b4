package dashboard

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
)

// overviewData is the estate at a glance.
type overviewData struct {
	// Live counts unexpired, unrevoked certificates by kind.
	Live      []kindCount
	LiveTotal int
	// LiveScanned is how many live certificates were read; Truncated says
	// the count stopped at liveScanMax.
	LiveScanned int
	Truncated   bool
	LiveErr     string
	// Hours and Days chart when live certificates expire.
	Hours, Days timeline
	// Revocations are the latest among the newest RevScanned certificates.
	Revocations []api.CertificateInfo
	RevScanned  int
	RevErr      string
	Health      *client.Health
	HealthErr   string
	CRL         *crlView
	CRLErr      string
	// CAs are the operator's chain above its own certificate.
	CAs []caView
}

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
	d.liveCounts(ctx, now, &o)
	d.recentRevocations(ctx, &o)
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

// liveCounts counts the live certificates by kind and charts their expiry.
func (d *Dashboard) liveCounts(ctx context.Context, now time.Time, o *overviewData) {
	counts := map[pki.Kind]int{}
	o.Hours = newTimeline(now, time.Hour, 24, "h", 3)
	o.Days = newTimeline(now, 24*time.Hour, 7, "d", 1)
	read, next, err := d.scan(ctx, "", true, "", liveScanMax, func(c api.CertificateInfo) error {
		if c.RevokedAt != nil || now.After(c.NotAfter) {
			return nil
		}
		kind := pki.KindReserved
		if id, err := spiffeid.FromString(c.SPIFFEID); err == nil {
			kind = pki.KindOf(id)
		}
		counts[kind]++
		o.LiveTotal++
		o.Hours.add(c.NotAfter)
		o.Days.add(c.NotAfter)
		return nil
	})
	o.LiveScanned, o.Truncated = read, next != ""
	if err != nil {
		o.LiveErr = err.Error()
	}
	for k, n := range counts {
		o.Live = append(o.Live, kindCount{Kind: k.String(), Count: n})
	}
	slices.SortFunc(o.Live, func(a, b kindCount) int { return b.Count - a.Count })
	o.Hours.layout()
	o.Days.layout()
}

// recentRevocations lists the latest revocations among the newest
// certificates.
func (d *Dashboard) recentRevocations(ctx context.Context, o *overviewData) {
	read, _, err := d.scan(ctx, "", false, "", recentScanMax, func(c api.CertificateInfo) error {
		if c.RevokedAt != nil {
			o.Revocations = append(o.Revocations, c)
		}
		return nil
	})
	o.RevScanned = read
	if err != nil {
		o.RevErr = err.Error()
	}
	slices.SortFunc(o.Revocations, func(a, b api.CertificateInfo) int { return b.RevokedAt.Compare(*a.RevokedAt) })
	if len(o.Revocations) > 10 {
		o.Revocations = o.Revocations[:10]
	}
}

// timeline is a bar chart of expiries in consecutive buckets from now,
// laid out for an SVG of chartWidth × chartHeight.
type timeline struct {
	start time.Time
	step  time.Duration
	// unit names step in labels ("h", "d"); every labelEvery-th bar is
	// labelled.
	unit       string
	labelEvery int
	Bars       []bar
	Max    int
	// Later counts expiries after the last bucket.
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

const chartWidth, chartHeight, chartBase = 720, 160, 130

func newTimeline(now time.Time, step time.Duration, n int, unit string, labelEvery int) timeline {
	return timeline{start: now, step: step, unit: unit, labelEvery: labelEvery, Bars: make([]bar, n)}
}

func (t *timeline) add(at time.Time) {
	i := int(at.Sub(t.start) / t.step)
	if i < 0 {
		i = 0
	}
	if i >= len(t.Bars) {
		t.Later++
		return
	}
	t.Bars[i].Count++
}

// layout sizes the bars to the largest.
func (t *timeline) layout() {
	for _, b := range t.Bars {
		t.Max = max(t.Max, b.Count)
	}
	w := chartWidth / len(t.Bars)
	for i := range t.Bars {
		b := &t.Bars[i]
		b.Label = fmt.Sprintf("≤%d%s", i+1, t.unit)
		b.Shown = (i+1)%t.labelEvery == 0
		b.X, b.W = i*w+2, w-4
		if t.Max > 0 {
			b.H = b.Count * (chartBase - 20) / t.Max
		}
		if b.Count > 0 && b.H == 0 {
			b.H = 1
		}
		b.Y = chartBase - b.H
		b.LabelX = b.X + b.W/2
		b.TopY = b.Y - 4
	}
}

// String describes the timeline in words, for the chart's title.
func (t timeline) String() string {
	return fmt.Sprintf("%d buckets of %s from now, largest %d", len(t.Bars), t.step, t.Max)
}
