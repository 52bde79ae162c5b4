package publish_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestFeedRefusesStrangers: the push feed needs a valid certificate of this
// CA's trust domain.
func TestFeedRefusesStrangers(t *testing.T) {
	t.Parallel()
	e := startCA(t, "")
	roots := []*x509.Certificate{e.Root}

	t.Run("no certificate", func(t *testing.T) {
		fs, err := e.subscribe(t, feedClient(roots, nil), 0)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(fs.resp.Body)
		var ae api.Error
		if fs.resp.StatusCode != http.StatusUnauthorized || json.Unmarshal(body, &ae) != nil || ae.Code != "client_certificate_required" {
			t.Fatalf("HTTP %d %s, want 401 client_certificate_required", fs.resp.StatusCode, body)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := testca.New(t)
		intruder := other.Leaf(t, "spiffe://example.org/ns/prod/proxy")
		fs, err := e.subscribe(t, feedClient(roots, intruder), 0)
		if err == nil {
			t.Fatalf("a certificate from another CA was accepted: HTTP %d", fs.resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "tls:") {
			t.Fatalf("refused, but not by TLS: %v", err)
		}
		t.Logf("refused: %v", err)
	})
	t.Run("revoked certificate", func(t *testing.T) {
		id := e.Enroll(t, "spiffe://example.org/ns/prod/gone", api.TokenRequest{})
		e.revoke(t, id.Leaf(), "keyCompromise")
		fs, err := e.subscribe(t, feedClient(roots, id), 0)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(fs.resp.Body)
		if fs.resp.StatusCode != http.StatusForbidden {
			t.Fatalf("a revoked subscriber got HTTP %d %s, want 403", fs.resp.StatusCode, body)
		}
	})
	t.Run("certificate this CA signed but never recorded", func(t *testing.T) {
		// Signed by the right intermediate, but not in the CA's records.
		ghost := e.Leaf(t, "spiffe://example.org/ns/prod/ghost")
		fs, err := e.subscribe(t, feedClient(roots, ghost), 0)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(fs.resp.Body)
		if fs.resp.StatusCode != http.StatusForbidden {
			t.Fatalf("an unrecorded certificate got HTTP %d %s, want 403", fs.resp.StatusCode, body)
		}
	})
}

// TestFeedReplayAndResume: history is replayed as JSON lines with growing
// seq, then a heartbeat; new revocations arrive live; a subscriber that
// reconnects with since=N gets exactly what it missed; revoking twice makes
// one event.
func TestFeedReplayAndResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := startCA(t, "")
	sub := e.Enroll(t, "spiffe://example.org/ns/prod/proxy", api.TokenRequest{})
	hc := feedClient(sub.Roots, sub)

	// Two revocations before anyone listens.
	var serials []string // every serial revoked, in order
	want := map[string]string{}
	newCert := func(name string) *x509.Certificate {
		l := e.Enroll(t, "spiffe://example.org/ns/prod/"+name, api.TokenRequest{}).Leaf()
		want[serialOf(l)] = "spiffe://example.org/ns/prod/" + name
		return l
	}
	for _, n := range []string{"a", "b"} {
		c := newCert(n)
		e.revoke(t, c, "keyCompromise")
		serials = append(serials, serialOf(c))
	}

	fs, err := e.subscribe(t, hc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fs.resp.StatusCode != http.StatusOK || fs.resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("feed: HTTP %d %q", fs.resp.StatusCode, fs.resp.Header.Get("Content-Type"))
	}
	evs, hb := fs.untilHeartbeat(t)
	checkEvents(t, evs, 0, serials, want)
	if hb.Seq != evs[len(evs)-1].Seq || hb.Serial != "" {
		t.Fatalf("heartbeat %+v after events up to %d", hb, evs[len(evs)-1].Seq)
	}
	if h := fs.resp.Header.Get("X-Mutual-Revocation-Seq"); h != strconv.FormatInt(hb.Seq, 10) {
		t.Fatalf("X-Mutual-Revocation-Seq %q, heartbeat seq %d", h, hb.Seq)
	}

	// Live: a revocation arrives at once; revoking it again adds nothing,
	// so the next event is the next certificate.
	c := newCert("c")
	e.revoke(t, c, "superseded")
	ev := fs.next(t)
	for ev.Heartbeat {
		ev = fs.next(t)
	}
	checkEvents(t, []revocation.Event{ev}, hb.Seq, []string{serialOf(c)}, want)
	serials = append(serials, serialOf(c))
	if r := e.revoke(t, c, "keyCompromise"); !r.Revoked[0].AlreadyRevoked {
		t.Fatalf("second revocation not reported as already revoked: %+v", r)
	}
	d := newCert("d")
	e.revoke(t, d, "")
	ev2 := fs.next(t)
	for ev2.Heartbeat {
		ev2 = fs.next(t)
	}
	if ev2.Serial != serialOf(d) || ev2.Seq != ev.Seq+1 {
		t.Fatalf("after revoking %s twice, the next event is %+v, want %s with seq %d", serialOf(c), ev2, serialOf(d), ev.Seq+1)
	}
	serials = append(serials, serialOf(d))
	last := ev2.Seq
	fs.resp.Body.Close()

	// Disconnected: several revocations, one of them by identity (two
	// certificates at once).
	var missed []string
	for _, n := range []string{"e", "f"} {
		c := newCert(n)
		e.revoke(t, c, "cessationOfOperation")
		missed = append(missed, serialOf(c))
	}
	g1 := newCert("g")
	g2 := e.Enroll(t, "spiffe://example.org/ns/prod/g", api.TokenRequest{}).Leaf()
	want[serialOf(g2)] = want[serialOf(g1)]
	r, err := e.Admin.Revoke(ctx, api.RevokeRequest{SPIFFEID: "spiffe://example.org/ns/prod/g", Reason: "affiliationChanged"})
	if err != nil || len(r.Revoked) != 2 {
		t.Fatalf("revoke identity: %+v %v", r, err)
	}
	for _, rv := range r.Revoked {
		missed = append(missed, rv.Serial)
	}
	serials = append(serials, missed...)

	fs2, err := e.subscribe(t, hc, last)
	if err != nil {
		t.Fatal(err)
	}
	evs2, hb2 := fs2.untilHeartbeat(t)
	checkEvents(t, evs2, last, missed, want)
	if hb2.Seq != evs2[len(evs2)-1].Seq {
		t.Fatalf("heartbeat seq %d, last event %d", hb2.Seq, evs2[len(evs2)-1].Seq)
	}

	// The whole history once more: every certificate exactly once.
	fs3, err := e.subscribe(t, hc, 0)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := fs3.untilHeartbeat(t)
	checkEvents(t, all, 0, serials, want)

	// A subscriber that is already up to date gets only the heartbeat.
	fs4, err := e.subscribe(t, hc, hb2.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if none, hb4 := fs4.untilHeartbeat(t); len(none) != 0 || hb4.Seq != hb2.Seq {
		t.Fatalf("up-to-date subscriber got %+v then heartbeat %+v", none, hb4)
	}
}

// checkEvents: evs are exactly the serials given (as a set, each once),
// with seq growing by one from after, and complete fields.
func checkEvents(t testing.TB, evs []revocation.Event, after int64, serials []string, ids map[string]string) {
	t.Helper()
	if len(evs) != len(serials) {
		t.Fatalf("%d events %+v, want %d (%v)", len(evs), evs, len(serials), serials)
	}
	wantSet := map[string]bool{}
	for _, s := range serials {
		wantSet[s] = true
	}
	seen := map[string]bool{}
	prev := after
	for _, ev := range evs {
		if ev.Heartbeat {
			t.Fatalf("unexpected heartbeat %+v", ev)
		}
		if ev.Seq <= prev {
			t.Fatalf("seq %d after %d: not increasing (%+v)", ev.Seq, prev, evs)
		}
		prev = ev.Seq
		if !wantSet[ev.Serial] || seen[ev.Serial] {
			t.Fatalf("event for %s unexpected or repeated; want %v, got %+v", ev.Serial, serials, evs)
		}
		seen[ev.Serial] = true
		if ids != nil && ev.SPIFFEID != ids[ev.Serial] {
			t.Fatalf("event %s: SPIFFE ID %q, want %q", ev.Serial, ev.SPIFFEID, ids[ev.Serial])
		}
		if ev.RevokedAt.IsZero() || ev.NotAfter.IsZero() || time.Since(ev.RevokedAt) > time.Minute {
			t.Fatalf("event %+v: times missing or wrong", ev)
		}
	}
	// Seqs are consecutive from the first: nothing in between was skipped.
	if len(evs) > 0 && evs[len(evs)-1].Seq-evs[0].Seq != int64(len(evs)-1) {
		t.Fatalf("seq gaps in %+v", evs)
	}
}
