package main

import (
	"fmt"
	"io"
	"strings"
)

// goal is one line of issue #15's table: a ratio of the proxy to a peer
// and the bound it must meet.
type goal struct {
	figure string
	// ratio returns the figure for round r (-1: over all rounds), and
	// false when a server it needs was not measured.
	ratio func(r int) (float64, bool)
	min   bool // the ratio must be at least bound (else at most)
	bound float64
	// ref marks a figure printed for reference, with no goal: what a peer
	// reaches against the same baseline.
	ref bool
}

// goals prints issue #15's table: each figure per round of the rate tests
// and over the whole run, with its goal and whether it was met. Rates are
// compared as measured and as CPU per operation (what each server would
// do with the same CPU), which a loaded machine does not skew.
func (rep *report) goals(w io.Writer, by map[string]*target) {
	rounds := rep.o.rounds
	fmt.Fprintf(w, "### issue #15: the proxy against its goals\n\n")
	var head, rule strings.Builder
	for r := range rounds {
		fmt.Fprintf(&head, " round %d |", r+1)
		rule.WriteString(" ---: |")
	}
	fmt.Fprintf(w, "| figure | goal |%s whole run | met |\n| --- | --- |%s ---: | --- |\n", head.String(), rule.String())
	for _, g := range goalList(by) {
		op := "≤"
		if g.min {
			op = "≥"
		}
		if g.ref {
			fmt.Fprintf(w, "| %s | (reference) |", g.figure)
		} else {
			fmt.Fprintf(w, "| %s | %s %.2f |", g.figure, op, g.bound)
		}
		for r := range rounds {
			if v, ok := g.ratio(r); ok {
				fmt.Fprintf(w, " %.2f |", v)
			} else {
				fmt.Fprint(w, " – |")
			}
		}
		if v, ok := g.ratio(-1); ok && g.ref {
			fmt.Fprintf(w, " %.2f | – |\n", v)
		} else if ok {
			fmt.Fprintf(w, " %.2f | %s |\n", v, verdict(g.min && v >= g.bound || !g.min && v <= g.bound))
		} else {
			fmt.Fprint(w, " – | – |\n")
		}
	}
	fmt.Fprintln(w)
}

// goalList is issue #15's table over the servers measured.
func goalList(by map[string]*target) []goal {
	ok := func(t *target) bool { return t != nil && !t.disabled }
	ka := func(key string, r int) (rate, bool) {
		t := by[key]
		if !ok(t) {
			return rate{}, false
		}
		return roundOf(t.kaRounds, t.ka, r)
	}
	hs := func(key string, r int) (rate, bool) {
		t := by[key]
		if !ok(t) {
			return rate{}, false
		}
		return roundOf(t.hsRounds, t.hs, r)
	}
	// pair compares the proxy p to base in one test's round with f.
	pair := func(get func(string, int) (rate, bool), p, base string, f func(a, b rate) (float64, bool)) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			a, ok1 := get(p, r)
			b, ok2 := get(base, r)
			if !ok1 || !ok2 {
				return 0, false
			}
			return f(a, b)
		}
	}
	byRate := func(a, b rate) (float64, bool) { return a.perSecond() / b.perSecond(), a.ops > 0 && b.ops > 0 }
	byCPU := func(a, b rate) (float64, bool) {
		return b.cpuPerOp() / a.cpuPerOp(), a.cpuPerOp() > 0 && b.cpuPerOp() > 0
	}
	byP99 := func(a, b rate) (float64, bool) {
		return float64(a.percentile(99)) / float64(b.percentile(99)), b.percentile(99) > 0
	}
	kaRate := func(p, base string) func(int) (float64, bool) { return pair(ka, p, base, byRate) }
	kaCPU := func(p, base string) func(int) (float64, bool) { return pair(ka, p, base, byCPU) }
	p99 := func(p, base string) func(int) (float64, bool) { return pair(ka, p, base, byP99) }
	hsRate := func(p, base string) func(int) (float64, bool) { return pair(hs, p, base, byRate) }
	hsCPU := func(p, base string) func(int) (float64, bool) { return pair(hs, p, base, byCPU) }
	whole := func(f func(t *target) (float64, bool), p, base string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			if r >= 0 || !ok(by[p]) || !ok(by[base]) {
				return 0, false
			}
			a, ok1 := f(by[p])
			b, ok2 := f(by[base])
			return a / b, ok1 && ok2 && b > 0
		}
	}
	bulk := func(t *target) (float64, bool) { return t.bulk.mbps, t.bulk.n > 0 }
	// MB per second of server CPU, over all bulk runs.
	bulkByCPU := func(t *target) (float64, bool) {
		return float64(t.bulk.n) / 1e6 / t.bulk.cpu.Seconds(), t.bulk.n > 0 && t.bulk.cpu > 0
	}
	rss := func(t *target) (float64, bool) { return float64(t.rssKiB), t.rssKiB > 0 }
	idle := func(key string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			t := by[key]
			return t.idleKiB, r < 0 && ok(t) && t.idleErr == nil && t.idleKiB != 0
		}
	}
	goals := []goal{
		{"http keep-alive req/s ÷ Caddy's", kaRate("proxy-http", "caddy"), true, 1, false},
		{"  same, by CPU per request (Caddy's ÷ ours)", kaCPU("proxy-http", "caddy"), true, 1, false},
		{"http keep-alive req/s ÷ nginx proxy_pass's", kaRate("proxy-http", "nginx"), true, 1.2, false},
		{"  same, by CPU per request (nginx's ÷ ours)", kaCPU("proxy-http", "nginx"), true, 1.2, false},
		{"http p99 ÷ nginx's p99 (same load)", p99("proxy-http", "nginx"), false, 1, false},
		{"tcp keep-alive req/s ÷ ghostunnel's", kaRate("proxy-tcp", "ghostunnel"), true, 1.1, false},
		{"  same, by CPU per request (ghostunnel's ÷ ours)", kaCPU("proxy-tcp", "ghostunnel"), true, 1.1, false},
		{"new handshakes/s (tcp) ÷ bare crypto/tls's", hsRate("proxy-tcp", "bare"), true, 0.95, false},
		{"  same, by CPU per handshake (bare's ÷ ours)", hsCPU("proxy-tcp", "bare"), true, 0.95, false},
		{"bulk MB/s (tcp) ÷ bare crypto/tls's (median run)", whole(bulk, "proxy-tcp", "bare"), true, 0.9, false},
		{"  same, by CPU per MB (bare's ÷ ours)", whole(bulkByCPU, "proxy-tcp", "bare"), true, 0.9, false},
		{"  ghostunnel's bulk MB/s ÷ bare's (a relay too)", whole(bulk, "ghostunnel", "bare"), true, 0, true},
		{"RSS after the load (http) ÷ Caddy's", whole(rss, "proxy-http", "caddy"), false, 1, false},
		{"idle KiB per connection, http (RSS delta)", idle("proxy-http"), false, 32, false},
		{"idle KiB per connection, tcp (RSS delta)", idle("proxy-tcp"), false, 32, false},
	}
	return goals
}

// roundOf returns round r of a test's results (-1: all rounds merged).
func roundOf(rs []rate, all rate, r int) (rate, bool) {
	if r < 0 {
		return all, all.elapsed > 0
	}
	if r >= len(rs) || rs[r].elapsed == 0 {
		return rate{}, false
	}
	return rs[r], true
}

// byRate, byCPU and byP99 compare the proxy's result a to a peer's b: the
// ratio, and whether both were measured.
func byRate(a, b rate) (float64, bool) { return a.perSecond() / b.perSecond(), a.ops > 0 && b.ops > 0 }

func byCPU(a, b rate) (float64, bool) {
	return b.cpuPerOp() / a.cpuPerOp(), a.cpuPerOp() > 0 && b.cpuPerOp() > 0
}

func byP99(a, b rate) (float64, bool) {
	return float64(a.percentile(99)) / float64(b.percentile(99)), b.percentile(99) > 0
}
