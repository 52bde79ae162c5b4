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
}

// goals prints issue #15's table: each figure per round of the rate tests
// and over the whole run, with its goal and whether it was met. Rates are
// compared as measured and as CPU per operation (what each server would
// do with the same CPU), which a loaded machine does not skew.
func (rep *report) goals(w io.Writer, by map[string]*target) {
	rounds := rep.o.rounds
	ok := func(t *target) bool { return t != nil && !t.disabled }
	roundOf := func(rs []rate, all rate, r int) (rate, bool) {
		if r < 0 {
			return all, all.elapsed > 0
		}
		if r >= len(rs) || rs[r].elapsed == 0 {
			return rate{}, false
		}
		return rs[r], true
	}
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
	kaRate := func(p, base string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			a, ok1 := ka(p, r)
			b, ok2 := ka(base, r)
			return a.perSecond() / b.perSecond(), ok1 && ok2 && a.ops > 0 && b.ops > 0
		}
	}
	kaCPU := func(p, base string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			a, ok1 := ka(p, r)
			b, ok2 := ka(base, r)
			return b.cpuPerOp() / a.cpuPerOp(), ok1 && ok2 && a.cpuPerOp() > 0 && b.cpuPerOp() > 0
		}
	}
	p99 := func(p, base string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			a, ok1 := ka(p, r)
			b, ok2 := ka(base, r)
			return float64(a.percentile(99)) / float64(b.percentile(99)), ok1 && ok2 && b.percentile(99) > 0
		}
	}
	hsCPU := func(p, base string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			a, ok1 := hs(p, r)
			b, ok2 := hs(base, r)
			return b.cpuPerOp() / a.cpuPerOp(), ok1 && ok2 && a.cpuPerOp() > 0 && b.cpuPerOp() > 0
		}
	}
	hsRate := func(p, base string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			a, ok1 := hs(p, r)
			b, ok2 := hs(base, r)
			return a.perSecond() / b.perSecond(), ok1 && ok2 && a.ops > 0 && b.ops > 0
		}
	}
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
	rss := func(t *target) (float64, bool) { return float64(t.rssKiB), t.rssKiB > 0 }
	idle := func(key string) func(int) (float64, bool) {
		return func(r int) (float64, bool) {
			t := by[key]
			return t.idleKiB, r < 0 && ok(t) && t.idleErr == nil && t.idleKiB != 0
		}
	}
	goals := []goal{
		{"http keep-alive req/s ÷ Caddy's", kaRate("proxy-http", "caddy"), true, 1},
		{"  same, by CPU per request (Caddy's ÷ ours)", kaCPU("proxy-http", "caddy"), true, 1},
		{"http keep-alive req/s ÷ nginx proxy_pass's", kaRate("proxy-http", "nginx"), true, 1.2},
		{"  same, by CPU per request (nginx's ÷ ours)", kaCPU("proxy-http", "nginx"), true, 1.2},
		{"http p99 ÷ nginx's p99 (same load)", p99("proxy-http", "nginx"), false, 1},
		{"tcp keep-alive req/s ÷ ghostunnel's", kaRate("proxy-tcp", "ghostunnel"), true, 1.1},
		{"  same, by CPU per request (ghostunnel's ÷ ours)", kaCPU("proxy-tcp", "ghostunnel"), true, 1.1},
		{"new handshakes/s (tcp) ÷ bare crypto/tls's", hsRate("proxy-tcp", "bare"), true, 0.95},
		{"  same, by CPU per handshake (bare's ÷ ours)", hsCPU("proxy-tcp", "bare"), true, 0.95},
		{"bulk MB/s (tcp) ÷ bare crypto/tls's (median run)", whole(bulk, "proxy-tcp", "bare"), true, 0.9},
		{"RSS after the load (http) ÷ Caddy's", whole(rss, "proxy-http", "caddy"), false, 1},
		{"idle KiB per connection, http (RSS delta)", idle("proxy-http"), false, 32},
		{"idle KiB per connection, tcp (RSS delta)", idle("proxy-tcp"), false, 32},
	}
	fmt.Fprintf(w, "### issue #15: the proxy against its goals\n\n")
	var head, rule strings.Builder
	for r := range rounds {
		fmt.Fprintf(&head, " round %d |", r+1)
		rule.WriteString(" ---: |")
	}
	fmt.Fprintf(w, "| figure | goal |%s whole run | met |\n| --- | --- |%s ---: | --- |\n", head.String(), rule.String())
	for _, g := range goals {
		op := "≤"
		if g.min {
			op = "≥"
		}
		fmt.Fprintf(w, "| %s | %s %.2f |", g.figure, op, g.bound)
		for r := range rounds {
			if v, ok := g.ratio(r); ok {
				fmt.Fprintf(w, " %.2f |", v)
			} else {
				fmt.Fprint(w, " – |")
			}
		}
		v, measured := g.ratio(-1)
		met := "–"
		if measured {
			met = verdict(g.min && v >= g.bound || !g.min && v <= g.bound)
			fmt.Fprintf(w, " %.2f | %s |\n", v, met)
		} else {
			fmt.Fprintf(w, " – | %s |\n", met)
		}
	}
	fmt.Fprintln(w)
}
