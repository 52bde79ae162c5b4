package translog_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/translog"
)

// TestVerify: the first verification remembers the checkpoint; the next
// proves the log only grew since, and that a certificate is in it; a
// checkpoint remembered from a longer log is a rollback.
func TestVerify(t *testing.T) {
	e := startCA(t, "")
	ctx := context.Background()
	st := &translog.State{}
	if err := st.UseKey(e.verifierKey); err != nil {
		t.Fatal(err)
	}
	first, err := translog.Verify(ctx, e.logClient(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.ConsistentWith != nil || first.CertificateIndex != nil || st.Checkpoint == "" {
		t.Errorf("first verification: %+v (remembered %q); want only the checkpoint, remembered", first, st.Checkpoint)
	}
	web := e.Enroll(t, "spiffe://example.org/ns/prod/web", api.TokenRequest{})
	cp := e.settle(t)
	v, err := translog.Verify(ctx, e.logClient(), st, web.Leaf())
	if err != nil {
		t.Fatal(err)
	}
	if v.TreeSize < cp.Size || v.RootHash == "" || v.ConsistentWith == nil || *v.ConsistentWith != first.TreeSize {
		t.Errorf("second verification %+v: want the grown tree, consistent with %d entries", v, first.TreeSize)
	}
	if v.CertificateIndex == nil || v.RequestedBy == "" || translog.Requester(v.RequestedBy).Kind() != translog.RequestedByToken {
		t.Errorf("second verification %+v: want the certificate's index, requested by a token", v)
	}

	longer := &translog.State{VerifierKey: e.verifierKey, Checkpoint: st.Checkpoint}
	e.rollBack(t, first.TreeSize)
	if _, err := translog.Verify(ctx, e.logClient(), longer, nil); !errors.Is(err, translog.ErrRollback) {
		t.Errorf("Verify after a rollback: %v, want ErrRollback", err)
	}
	if longer.Checkpoint != st.Checkpoint {
		t.Error("a failed verification replaced the checkpoint remembered")
	}
}

func TestStateUseKey(t *testing.T) {
	st := &translog.State{}
	for _, c := range []struct {
		key, want string
		err       error
	}{
		{"", "", nil},     // nothing given, nothing remembered
		{"K1", "K1", nil}, // given: remembered
		{"", "K1", nil},   // none given: the remembered one
		{"K1", "K1", nil}, // the same again
		{"K2", "K1", translog.ErrVerifierKeyChanged}, // another: refused, the first kept
	} {
		err := st.UseKey(c.key)
		if !errors.Is(err, c.err) || st.VerifierKey != c.want {
			t.Errorf("UseKey(%q) = %v, key %q; want %v, key %q", c.key, err, st.VerifierKey, c.err, c.want)
		}
	}
}
