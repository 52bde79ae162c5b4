package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
)

// issued holds every unexpired certificate the CA at caURL lists to the
// policy's maximum lifetime, and judges its partnerships. It authenticates with the CA directory's
// admin identity, so it needs --ca.
func (a *auditor) issued(ctx context.Context, caURL string) error {
	if a.o.CADir == "" {
		return fmt.Errorf("--ca-url %s: give --ca DIR too: the CA's certificate list is read with DIR/admin, the operator identity", caURL)
	}
	adminDir := filepath.Join(a.o.CADir, pki.AdminDir)
	admin, err := identity.Load(adminDir)
	if err != nil {
		return fmt.Errorf("--ca-url: the operator identity %s: %w", adminDir, err)
	}
	tc := admin.TLSCertificate()
	cl, err := client.New([]string{caURL}, admin.Roots, &tc)
	if err != nil {
		return fmt.Errorf("--ca-url %s: %w", caURL, err)
	}
	defer cl.CloseIdleConnections()
	a.r.Checked = append(a.r.Checked, "certificates issued by "+caURL)
	err = cl.ListAllCertificates(ctx, "", true, 0, func(page *api.CertificateList) error {
		for _, c := range page.Certificates {
			a.issuedLifetime(caURL, c)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("--ca-url %s: list certificates: %w", caURL, err)
	}
	return a.partners(ctx, cl, caURL)
}

// issuedLifetime flags one listed certificate that lives longer than the
// policy allows. The CA's own TLS certificate (renewed by the CA itself)
// and operator certificates (made by ca init for pki.DefaultAdminTTL) are
// exempt, as in certChecks.
func (a *auditor) issuedLifetime(caURL string, c api.CertificateInfo) {
	if c.RevokedAt != nil || c.NotAfter.Before(a.o.Now()) {
		return
	}
	if id, err := spiffeid.FromString(c.SPIFFEID); err == nil {
		if k := pki.KindOf(id); k == pki.KindServer || k == pki.KindAdmin {
			return
		}
	}
	life := c.NotAfter.Sub(c.NotBefore)
	if life <= a.o.MaxLifetime+2*time.Minute {
		return
	}
	a.add("lifetime-above-policy", Medium, "a certificate lives longer than policy allows",
		fmt.Sprintf("%s lists serial %s for %s: %s (valid until %s), policy maximum %s",
			strings.TrimRight(caURL, "/"), c.Serial, c.SPIFFEID, life.Round(time.Minute), c.NotAfter.UTC().Format(time.RFC3339), a.o.MaxLifetime),
		fmt.Sprintf("revoke it (mutual cert revoke --server %s --identity-dir %s --serial %s) once its holder has a new certificate within policy; issue short-lived certificates and renew them (the agent does it at half-life)",
			caURL, filepath.Join(a.o.CADir, pki.AdminDir), c.Serial))
}
