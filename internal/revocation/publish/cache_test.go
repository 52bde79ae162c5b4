package publish_test

import (
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/revocation/publish"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/testclock"
)

// memCRLStore is a fixture: revoked certificates and a revocation seq.
type memCRLStore struct {
	mu      sync.Mutex
	seq     int64
	entries []store.RevokedEntry // with NotAfter kept alongside
	expiry  []time.Time
	fail    bool
}

func (m *memCRLStore) revoke(serial string, notAfter time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	m.entries = append(m.entries, store.RevokedEntry{Serial: serial, RevokedAt: time.Now().Truncate(time.Second), Reason: 1})
	m.expiry = append(m.expiry, notAfter)
}

func (m *memCRLStore) RevokedUnexpired(_ context.Context, now time.Time) ([]store.RevokedEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.RevokedEntry
	for i, e := range m.entries {
		if m.expiry[i].After(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memCRLStore) LastRevocationSeq(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return 0, errors.New("database unreachable")
	}
	return m.seq, nil
}

// TestCRLCaching: the CRL is cached until a revocation or half its
// validity, its number always grows (even when the clock steps back), its
// nextUpdate never passes the issuer's expiry, and while the store is away
// the last CRL is served until its nextUpdate.
func TestCRLCaching(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testca.New(t)
	clk := testclock.New(time.Now())
	st := &memCRLStore{}
	crl := &publish.CRL{Issuer: c.Issuer, Store: st, Now: clk.Now}
	parse := func() (*x509.RevocationList, int64) {
		t.Helper()
		der, seq, err := crl.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.CheckSignatureFrom(c.Intermediate); err != nil {
			t.Fatal(err)
		}
		return l, seq
	}
	first, _ := parse()
	if got := first.NextUpdate.Sub(first.ThisUpdate); got > revocation.CRLValidity+2*time.Minute {
		t.Fatalf("validity %s", got)
	}
	clk.Add(revocation.CRLValidity/2 - time.Second)
	if same, _ := parse(); same.Number.Cmp(first.Number) != 0 {
		t.Fatal("rebuilt before half its validity without a change")
	}
	clk.Add(2 * time.Second)
	second, _ := parse()
	if second.Number.Cmp(first.Number) <= 0 {
		t.Fatalf("number %v after %v", second.Number, first.Number)
	}
	// The clock steps back: the number still grows.
	st.revoke("abcdef", clk.Now().Add(time.Hour))
	clk.Add(-time.Hour)
	third, seq := parse()
	if third.Number.Cmp(second.Number) <= 0 || seq != 1 || len(third.RevokedCertificateEntries) != 1 {
		t.Fatalf("after a revocation with the clock stepped back: number %v (was %v), seq %d, %d entries", third.Number, second.Number, seq, len(third.RevokedCertificateEntries))
	}
	if third.RevokedCertificateEntries[0].SerialNumber.Cmp(big.NewInt(0xabcdef)) != 0 {
		t.Fatalf("entry %x", third.RevokedCertificateEntries[0].SerialNumber)
	}
	// Close to the intermediate's expiry, nextUpdate stops there.
	clk.Set(c.Intermediate.NotAfter.Add(-time.Minute))
	st.revoke("01", c.Intermediate.NotAfter.Add(time.Hour))
	late, _ := parse()
	if late.NextUpdate.After(c.Intermediate.NotAfter) {
		t.Fatalf("nextUpdate %s after the issuer's expiry %s", late.NextUpdate, c.Intermediate.NotAfter)
	}
	// The store is away: the last CRL is served until its nextUpdate, then
	// nothing (never an empty CRL).
	st.mu.Lock()
	st.fail = true
	st.mu.Unlock()
	lastDER, _, _ := crl.Current(ctx)
	clk.Set(late.NextUpdate.Add(-time.Second))
	if der, seq, err := crl.Current(ctx); err != nil || string(der) != string(lastDER) || seq != 2 {
		t.Fatalf("store away before nextUpdate: %d bytes, seq %d, %v; want the last CRL", len(der), seq, err)
	}
	clk.Set(late.NextUpdate.Add(time.Second))
	if der, _, err := crl.Current(ctx); err == nil {
		t.Fatalf("store away after nextUpdate: a %d-byte CRL was served", len(der))
	}
	fresh := &publish.CRL{Issuer: c.Issuer, Store: st}
	if _, _, err := fresh.Current(ctx); err == nil {
		t.Fatal("a failing store gave a first CRL")
	}
}

// TestResponderCacheAndRotation: answers are cached (same bytes) until a
// revocation or half their validity; the delegated responder certificate
// is rotated at half its life and answers are then signed by the new one.
func TestResponderCacheAndRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := testca.New(t)
	leaf := c.Leaf(t, "spiffe://example.org/ns/prod/web").Leaf()
	clk := testclock.New(time.Now())
	st := &memStore{certs: map[string]store.Certificate{serialOf(leaf): {Serial: serialOf(leaf), NotAfter: leaf.NotAfter}}}
	r, err := publish.NewResponder(c.Issuer, st, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := ocsp.CreateRequest(leaf, c.Intermediate, nil)
	ask := func() (*ocsp.Response, []byte) {
		t.Helper()
		raw := r.Respond(ctx, req)
		resp, err := ocsp.ParseResponseForCert(raw, leaf, c.Intermediate)
		if err != nil {
			t.Fatal(err)
		}
		return resp, raw
	}
	first, raw1 := ask()
	if first.Status != ocsp.Good || first.Certificate.SerialNumber.Cmp(r.ResponderCert().SerialNumber) != 0 {
		t.Fatalf("%+v", first)
	}
	if _, raw2 := ask(); string(raw2) != string(raw1) {
		t.Fatal("a second answer was signed again instead of served from the cache")
	}
	// Revoked in the store: the cached answer stands until Invalidate.
	st.mu.Lock()
	rec := st.certs[serialOf(leaf)]
	rec.RevokedAt, rec.RevocationReason = clk.Now().Truncate(time.Second), ocsp.Superseded
	st.certs[serialOf(leaf)] = rec
	st.mu.Unlock()
	r.Invalidate(serialOf(leaf))
	if resp, _ := ask(); resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.Superseded {
		t.Fatalf("after Invalidate: %+v", resp)
	}
	// Past half the validity, the answer is signed anew.
	_, before := ask()
	clk.Add(publish.OCSPValidity/2 + time.Second)
	resp, after := ask()
	if string(before) == string(after) || !resp.ThisUpdate.After(clk.Now().Add(-2*time.Minute)) {
		t.Fatalf("answer not refreshed after half its validity: thisUpdate %s", resp.ThisUpdate)
	}
	// Rotation: nothing before half the responder certificate's life, a new
	// certificate after.
	old := r.ResponderCert()
	if err := r.Maintain(); err != nil || r.ResponderCert() != old {
		t.Fatalf("rotated early: %v", err)
	}
	clk.Set(old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore)/2 + time.Minute))
	if err := r.Maintain(); err != nil {
		t.Fatal(err)
	}
	fresh := r.ResponderCert()
	if fresh.SerialNumber.Cmp(old.SerialNumber) == 0 || !fresh.NotAfter.After(old.NotAfter) {
		t.Fatal("Maintain did not rotate the responder certificate")
	}
	if resp, _ := ask(); resp.Certificate.SerialNumber.Cmp(fresh.SerialNumber) != 0 {
		t.Fatal("answers after the rotation are still signed by the old responder certificate")
	}
}
