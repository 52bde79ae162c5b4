package server

import (
	"fmt"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/testclock"
)

// TestReportLimiter: a reporter may send reportBurst reports at once, then
// one every reportEvery; one reporter's flood costs another nothing; a
// proxy reporting at its feed's interval is never refused; reporters gone
// quiet are forgotten.
func TestReportLimiter(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := newReportLimiter(clock.Now)
	for i := range reportBurst {
		if wait := l.admit("flood"); wait != 0 {
			t.Fatalf("report %d of a burst refused (wait %s)", i+1, wait)
		}
	}
	if wait := l.admit("flood"); wait != reportEvery {
		t.Errorf("a report past the burst: wait %s, want %s", wait, reportEvery)
	}
	if wait := l.admit("proxy"); wait != 0 {
		t.Errorf("another reporter waits %s behind a flood", wait)
	}
	clock.Add(reportEvery)
	if wait := l.admit("flood"); wait != 0 {
		t.Errorf("a report %s after the refusal: wait %s", reportEvery, wait)
	}
	if wait := l.admit("flood"); wait == 0 {
		t.Error("a second report in the same interval was admitted")
	}
	for i := range 100 {
		clock.Add(5 * time.Second)
		if wait := l.admit("proxy"); wait != 0 {
			t.Fatalf("a proxy reporting every 5s refused at report %d (wait %s)", i, wait)
		}
	}
	for i := range 1000 {
		l.admit(fmt.Sprintf("spiffe://td/gone-%d", i))
	}
	clock.Add(2 * reportBurst * reportEvery)
	l.admit("proxy")
	if n := len(l.tat); n != 1 {
		t.Errorf("the limiter remembers %d reporters after they went quiet, want 1", n)
	}
}
