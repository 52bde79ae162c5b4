package translog_test

import (
	"context"
	"encoding/hex"
	"slices"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/testca"
)

// TestMonitorQuietAcrossRotations: the log entries of a root and an
// intermediate rotation (CA certificates, requested by ca-rotate-root and
// ca-rotate-intermediate) raise nothing, and the monitor learns the new
// intermediate, so what it issues afterwards raises nothing either.
func TestMonitorQuietAcrossRotations(t *testing.T) {
	e := startCA(t, "")
	me := newMonitor(t, e, "")
	expect(t, me.step(t), []string{}...)
	// Rules that pin the issuers hear of the new intermediate and of each
	// certificate it signs until they list it.
	pinned := newMonitor(t, e, "issuers: ["+hex.EncodeToString(e.Intermediate.SubjectKeyId)+"]")
	expect(t, pinned.step(t), []string{}...)

	e.Stop(t)
	ctx := context.Background()
	ro := caservice.RotateOptions{Dir: e.Dir, Passphrase: []byte(testca.Passphrase), Iterations: 1000}
	if _, err := caservice.RotateRoot(ctx, ro); err != nil {
		t.Fatal(err)
	}
	rot, err := caservice.RotateIntermediate(ctx, ro)
	if err != nil {
		t.Fatal(err)
	}
	e.Start(t)
	me.m.Client = e.logClient() // its plain-HTTP listener came back on another port
	pinned.m.Client = e.logClient()
	e.Enroll(t, "spiffe://example.org/ns/prod/after", api.TokenRequest{})
	e.renew(t, e.peer)

	expect(t, me.step(t), []string{}...)
	want := []string{hex.EncodeToString(e.Intermediate.SubjectKeyId), hex.EncodeToString(rot.New.SubjectKeyId)}
	if !slices.Equal(me.m.State.Issuers, want) {
		t.Errorf("learnt issuers %v, want the first and the rotated intermediate %v", me.m.State.Issuers, want)
	}
	// The rotation entry, the service's reissued TLS certificate, the
	// enrollment and the renewal.
	expect(t, pinned.step(t), "unknown_issuer", "unknown_issuer", "unknown_issuer", "unknown_issuer")
}
