package proxy

import (
	"testing"
	"time"
)

// TestLogSampler: at most limit lines a second; the first line of a later
// second reports how many were not logged; a negative limit logs all.
func TestLogSampler(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := logSampler{limit: 2}
	for i, want := range []bool{true, true, false, false} {
		if ok, dropped := s.allow(t0.Add(time.Duration(i) * time.Millisecond)); ok != want || dropped != 0 {
			t.Fatalf("line %d in the first second: logged %v (dropped %d), want %v", i, ok, dropped, want)
		}
	}
	if ok, dropped := s.allow(t0.Add(time.Second)); !ok || dropped != 2 {
		t.Fatalf("first line of the next second: logged %v, dropped %d; want logged, 2 dropped", ok, dropped)
	}
	all := logSampler{limit: -1}
	for i := range 10 {
		if ok, _ := all.allow(t0); !ok {
			t.Fatalf("limit -1: line %d not logged", i)
		}
	}
}
