package tlsconfig_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffetls "github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// TestAuthorizerSharedWithGoSPIFFE: one authorizer serves both packages.
// Ours, converted by SPIFFE, decides go-spiffe's handshakes (and receives
// the verified chain); go-spiffe's, converted by FromSPIFFE, decides ours.
func TestAuthorizerSharedWithGoSPIFFE(t *testing.T) {
	ca := testca.New(t)
	db, web := ca.Leaf(t, dbID), ca.Leaf(t, webID)
	bundle := &swapBundle{}
	bundle.set(ca.Root)
	dbSrc, webSrc := clientSource(db), clientSource(web)

	var sawChain []*x509.Certificate
	ours, err := tlsconfig.AuthorizeMatch("spiffe://example.org/ns/prod/db")
	if err != nil {
		t.Fatal(err)
	}
	recording := tlsconfig.Authorizer(func(id spiffeid.ID, chain []*x509.Certificate) error {
		sawChain = chain
		return ours(id, chain)
	})

	t.Run("ours in go-spiffe's client", func(t *testing.T) {
		addr := serveCert(t, db.TLSCertificate())
		if _, err := dialWith(addr, spiffetls.MTLSClientConfig(webSrc, bundle, recording.SPIFFE())); err != nil {
			t.Fatalf("go-spiffe client with our authorizer refused the right server: %v", err)
		}
		if len(sawChain) < 2 || !sawChain[0].Equal(db.Leaf()) {
			t.Fatalf("our authorizer got chain %v, want the verified chain, leaf first", sawChain)
		}
		addr = serveCert(t, ca.Leaf(t, "spiffe://example.org/ns/prod/cache").TLSCertificate())
		_, err := dialWith(addr, spiffetls.MTLSClientConfig(webSrc, bundle, recording.SPIFFE()))
		if err == nil || !strings.Contains(err.Error(), "matches none of") {
			t.Fatalf("go-spiffe client with our authorizer accepted the wrong server (or another error): %v", err)
		}
	})
	t.Run("go-spiffe's in ours", func(t *testing.T) {
		addr := serveCert(t, db.TLSCertificate())
		theirs := tlsconfig.FromSPIFFE(spiffetls.AuthorizeID(spiffeid.RequireFromString(dbID)))
		cfg, err := tlsconfig.ClientConfig(webSrc, bundle, theirs, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dialWith(addr, cfg); err != nil {
			t.Fatalf("our client with go-spiffe's authorizer refused the right server: %v", err)
		}
		wrong := tlsconfig.FromSPIFFE(spiffetls.AuthorizeID(spiffeid.RequireFromString(webID)))
		cfg, err = tlsconfig.ClientConfig(webSrc, bundle, wrong, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = dialWith(addr, cfg)
		var pe *tlsconfig.PeerError
		if !errors.As(err, &pe) || pe.Reason != tlsconfig.ReasonNotAuthorized {
			t.Fatalf("our client with go-spiffe's authorizer: %v, want a not_authorized refusal", err)
		}
	})
	t.Run("ours in go-spiffe's server", func(t *testing.T) {
		addr := serveTLS(t, spiffetls.MTLSServerConfig(dbSrc, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(webID)).SPIFFE()))
		cfg, err := tlsconfig.ClientConfig(webSrc, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(dbID)), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dialWith(addr, cfg); err != nil {
			t.Fatalf("go-spiffe server with our authorizer refused the right client: %v", err)
		}
		cfg, err = tlsconfig.ClientConfig(dbSrc, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(dbID)), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dialWith(addr, cfg); err == nil {
			t.Fatal("go-spiffe server with our authorizer accepted a client it does not allow")
		}
	})
}

// TestReasonCodes: every reason's value is a code fit for a metric label (no
// spaces, lower case), and its String is words.
func TestReasonCodes(t *testing.T) {
	words := map[tlsconfig.Reason]string{
		tlsconfig.ReasonNoCertificate:     "no certificate",
		tlsconfig.ReasonUnknownAuthority:  "unknown authority",
		tlsconfig.ReasonExpired:           "expired",
		tlsconfig.ReasonNotYetValid:       "not yet valid",
		tlsconfig.ReasonNoSPIFFEID:        "no SPIFFE ID",
		tlsconfig.ReasonWrongUsage:        "wrong key usage",
		tlsconfig.ReasonNotAuthorized:     "not authorized",
		tlsconfig.ReasonRevoked:           "revoked",
		tlsconfig.ReasonBadCertificate:    "bad certificate",
		tlsconfig.ReasonNameMismatch:      "name mismatch",
		tlsconfig.ReasonRevocationUnknown: "revocation status unknown",
	}
	for r, w := range words {
		if code := string(r); code == "" || strings.ContainsAny(code, " -") || strings.ToLower(code) != code {
			t.Errorf("reason %q is not a label-safe code", code)
		}
		if r.String() != w {
			t.Errorf("%q.String() = %q, want %q", string(r), r.String(), w)
		}
	}
	if got := tlsconfig.Reason("custom").String(); got != "custom" {
		t.Errorf("an unknown reason prints as %q, want its value", got)
	}
}
