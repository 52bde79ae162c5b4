package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// report prints the results as Markdown tables, one per proxy mode.
type report struct {
	o    *options
	ncpu int
}

// row is one metric of one test: a value per server.
type row struct {
	test  string
	name  string
	value func(*target) float64
	fmt   string
}

// measured tells whether t has a result for r's test.
func measured(t *target, r row) bool {
	switch r.test {
	case "handshake":
		return t.hs.elapsed > 0
	case "keepalive":
		return t.ka.elapsed > 0
	case "latency":
		return t.fixed.elapsed > 0
	case "bulk":
		return t.bulk.n > 0
	case "idle":
		return t.idleErr == nil && t.idleKiB != 0
	}
	return false
}

func (rep *report) rows() []row {
	o := rep.o
	ms := func(r func(*target) *rate, p float64) func(*target) float64 {
		return func(t *target) float64 { return float64(r(t).percentile(p).Microseconds()) / 1000 }
	}
	ka := func(t *target) *rate { return &t.ka }
	fixed := func(t *target) *rate { return &t.fixed }
	return []row{
		{test: "handshake", name: fmt.Sprintf("new mTLS handshakes/s (%d in flight, 1 request each)", o.hsConc), fmt: "%.0f",
			value: func(t *target) float64 { return t.hs.perSecond() }},
		{test: "handshake", name: "  server CPU busy", fmt: "%.0f%%", value: func(t *target) float64 { return 100 * t.hs.busy(rep.ncpu) }},
		{test: "handshake", name: "  server CPU µs per handshake", fmt: "%.0f", value: func(t *target) float64 { return t.hs.cpuPerOp() }},
		{test: "handshake", name: "  other programs' CPU (noise)", fmt: "%.0f%%", value: func(t *target) float64 { return 100 * t.hs.noise() }},
		{test: "keepalive", name: fmt.Sprintf("keep-alive requests/s (%d conns)", o.kaConc), fmt: "%.0f",
			value: func(t *target) float64 { return t.ka.perSecond() }},
		{test: "keepalive", name: "  p50 latency ms", fmt: "%.3f", value: ms(ka, 50)},
		{test: "keepalive", name: "  p99 latency ms", fmt: "%.3f", value: ms(ka, 99)},
		{test: "keepalive", name: "  server CPU busy", fmt: "%.0f%%", value: func(t *target) float64 { return 100 * t.ka.busy(rep.ncpu) }},
		{test: "keepalive", name: "  server CPU µs per request", fmt: "%.1f", value: func(t *target) float64 { return t.ka.cpuPerOp() }},
		{test: "keepalive", name: "  other programs' CPU (noise)", fmt: "%.0f%%", value: func(t *target) float64 { return 100 * t.ka.noise() }},
		{test: "latency", name: fmt.Sprintf("fixed rate %.0f requests/s (%d conns): achieved/s", o.rate, o.kaConc), fmt: "%.0f",
			value: func(t *target) float64 { return t.fixed.perSecond() }},
		{test: "latency", name: "  p50 latency ms", fmt: "%.3f", value: ms(fixed, 50)},
		{test: "latency", name: "  p99 latency ms", fmt: "%.3f", value: ms(fixed, 99)},
		{test: "latency", name: "  server CPU busy", fmt: "%.0f%%", value: func(t *target) float64 { return 100 * t.fixed.busy(rep.ncpu) }},
		{test: "latency", name: "  other programs' CPU (noise)", fmt: "%.0f%%", value: func(t *target) float64 { return 100 * t.fixed.noise() }},
		{test: "bulk", name: fmt.Sprintf("bulk upload MB/s (1 conn, %d MiB, median of %d)", o.bulkMiB, o.bulkRuns), fmt: "%.0f",
			value: func(t *target) float64 { return t.bulk.mbps }},
		{test: "bulk", name: "  server CPU µs per MB", fmt: "%.0f", value: func(t *target) float64 {
			if t.bulk.n == 0 {
				return 0
			}
			return float64(t.bulk.cpu.Microseconds()) / (float64(t.bulk.n) / 1e6)
		}},
		{test: "bulk", name: "  other programs' CPU (noise)", fmt: "%.0f%%", value: func(t *target) float64 {
			if t.bulk.elapsed == 0 {
				return 0
			}
			return 100 * t.bulk.others.Seconds() / t.bulk.elapsed.Seconds() / float64(machineCPUs())
		}},
		{test: "idle", name: fmt.Sprintf("idle memory KiB/conn (RSS delta, %d conns)", o.idleConns), fmt: "%.1f",
			value: func(t *target) float64 { return t.idleKiB }},
	}
}

func cell(t *target, r row) string {
	if t == nil || t.disabled || !measured(t, r) {
		return "–"
	}
	v := r.value(t)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf(r.fmt, v)
}

func ratio(p, base *target, r row) string {
	if base == nil || base.disabled || strings.HasSuffix(r.fmt, "%%") {
		return ""
	}
	if !measured(p, r) || !measured(base, r) {
		return "–"
	}
	a, b := r.value(p), r.value(base)
	if b == 0 || math.IsNaN(a/b) {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// table prints the comparison of one proxy mode, then the budgets.
func (rep *report) table(w io.Writer, p, bare, nginx *target, peers ...*target) {
	fmt.Fprintf(w, "### %s\n\n", p.name)
	cols := append([]*target{bare, nginx}, peers...)
	var head, rule, ratios strings.Builder
	for _, t := range cols {
		fmt.Fprintf(&head, " %s |", t.name)
		fmt.Fprintf(&ratios, " proxy/%s |", t.key)
		rule.WriteString(" ---: | ---: |")
	}
	fmt.Fprintf(w, "| metric | %s |%s%s\n", p.name, head.String(), ratios.String())
	fmt.Fprintf(w, "| --- | ---: |%s\n", rule.String())
	for _, r := range rep.rows() {
		if !rep.o.tests[r.test] {
			continue
		}
		fmt.Fprintf(w, "| %s | %s |", r.name, cell(p, r))
		for _, t := range cols {
			fmt.Fprintf(w, " %s |", cell(t, r))
		}
		for _, t := range cols {
			fmt.Fprintf(w, " %s |", ratio(p, t, r))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	rep.budgets(w, p, bare, nginx)
	fmt.Fprintln(w)
}

// handshakeRatio compares handshake capacity: the measured rate when both
// servers were saturated, else the inverse ratio of CPU per handshake
// (what each would do with the same CPU).
func (rep *report) handshakeRatio(p, base *target) (float64, string) {
	if p.hs.busy(rep.ncpu) >= 0.9 && base.hs.busy(rep.ncpu) >= 0.9 {
		return p.hs.perSecond() / base.hs.perSecond(), "measured rates, both servers saturated"
	}
	return base.hs.cpuPerOp() / p.hs.cpuPerOp(), fmt.Sprintf("CPU per handshake: the servers were %.0f%% and %.0f%% busy, so the load, not they, set the rate",
		100*p.hs.busy(rep.ncpu), 100*base.hs.busy(rep.ncpu))
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (rep *report) budgets(w io.Writer, p, bare, nginx *target) {
	fmt.Fprintf(w, "Budgets (DESIGN.md) for %s:\n\n", p.name)
	both := func(test string, a, b *target) bool {
		return a != nil && b != nil && !a.disabled && !b.disabled && measured(a, row{test: test}) && measured(b, row{test: test})
	}
	if both("handshake", p, bare) {
		hr, how := rep.handshakeRatio(p, bare)
		fmt.Fprintf(w, "- handshakes ≥ 90%% of bare: %.0f%% (%s): %s\n", 100*hr, how, verdict(hr >= 0.9))
	}
	if both("bulk", p, bare) {
		tr := p.bulk.mbps / bare.bulk.mbps
		fmt.Fprintf(w, "- bulk throughput ≥ 90%% of bare: %.0f%%: %s\n", 100*tr, verdict(tr >= 0.9))
	}
	if both("latency", p, bare) {
		pr := float64(p.fixed.percentile(99)) / float64(bare.fixed.percentile(99))
		fmt.Fprintf(w, "- p99 latency ≤ 2× bare: %.2f× at a fixed %.0f requests/s: %s\n", pr, rep.o.rate, verdict(pr <= 2))
	}
	if both("keepalive", p, bare) {
		pr := float64(p.ka.percentile(99)) / float64(bare.ka.percentile(99))
		fmt.Fprintf(w, "- p99 latency ≤ 2× bare: %.2f× at saturation (%d connections, one request in flight on each; by Little's law this mostly restates the throughput ratio): %s\n",
			pr, rep.o.kaConc, verdict(pr <= 2))
	}
	if measured(p, row{test: "idle"}) {
		fmt.Fprintf(w, "- ≤ 32 KiB per idle connection: %.1f KiB (RSS): %s\n", p.idleKiB, verdict(p.idleKiB <= 32))
	}
	if both("handshake", p, nginx) {
		nr, how := rep.handshakeRatio(p, nginx)
		fmt.Fprintf(w, "- handshakes ≥ nginx: %.0f%% of nginx (%s): %s\n", 100*nr, how, verdict(nr >= 1))
	}
}
