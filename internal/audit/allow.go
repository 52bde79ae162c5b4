package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/mutual-tls/mutual/internal/authz"
	"github.com/mutual-tls/mutual/internal/pki"
)

// allowPatterns flags allow patterns that let in more than the callers of
// one service. where names the file and flag or rule ("FILE: --allow",
// "FILE rule 2: ids"); own is this deployment's trust domain ("" when
// unknown).
func (a *auditor) allowPatterns(where string, patterns []string, own string) {
	for _, s := range patterns {
		if f, ok := allowBreadth(s, own); ok {
			a.add(f.ID, f.Severity, f.Title, where+" "+s+": "+f.Evidence, f.Fix)
		}
	}
}

// allowBreadth judges one allow pattern; ok is false when it is narrow
// enough. The Evidence returned says what the pattern lets in.
func allowBreadth(s, own string) (Finding, bool) {
	p, err := authz.ParsePattern(s)
	if err != nil {
		rest := strings.TrimPrefix(s, "spiffe://")
		td, _, _ := strings.Cut(rest, "/")
		if strings.Contains(td, "*") {
			return Finding{ID: "allow-any", Severity: High, Title: "an allow pattern stands for every identity of every trust domain",
				Evidence: fmt.Sprintf("meant as anyone at all, any CA's certificate included; mutual refuses to load it (%v), so the proxy does not start or keeps its previous policy", err),
				Fix:      "list the SPIFFE IDs of the services that call this one, e.g. spiffe://TRUST-DOMAIN/ns/prod/web"}, true
		}
		return Finding{ID: "allow-invalid", Severity: Medium, Title: "an allow pattern is not valid",
			Evidence: fmt.Sprintf("%v; the proxy does not start, or a reload keeps the previous policy", err),
			Fix:      "write spiffe://TRUST-DOMAIN/PATH, with * for one whole segment and ** only at the end"}, true
	}
	rest := strings.TrimPrefix(p.String(), "spiffe://")
	td, path, _ := strings.Cut(rest, "/")
	wild := strings.Contains(path, "*")
	switch {
	case own != "" && td != own && wild:
		return Finding{ID: "allow-foreign-wildcard", Severity: High, Title: "an allow pattern admits a wildcard of another trust domain",
			Evidence: fmt.Sprintf("any identity that %s's CA names this way is let in: that CA, not %s, decides who it is", td, own),
			Fix: fmt.Sprintf("allow the partner's exact identities (spiffe://%s/ns/prod/client), and bound its trust domain with a partnership: "+
				"mutual partner create NAME --trust-domain %s --allow-service SERVICE --allow-request \"GET /PATH/\"", td, td)}, true
	case path == "**":
		return Finding{ID: "allow-whole-domain", Severity: Low, Title: "the proxy allows the whole trust domain",
			Evidence: "every identity of " + td + ", node agents and admins included, is let in",
			Fix:      "allow only the identities that call this service"}, true
	case strings.HasPrefix(path, "*"):
		return Finding{ID: "allow-root-wildcard", Severity: Low, Title: "an allow pattern has a wildcard at the root of the trust domain",
			Evidence: "any workload of " + td + " whose ID has this shape is let in, whatever service it names",
			Fix:      "allow only the identities that call this service, e.g. spiffe://" + td + "/ns/prod/web"}, true
	}
	return Finding{}, false
}

// policyRule is a proxy policy rule as written, read leniently so that a
// rule mutual would refuse is still judged.
type policyRule struct {
	IDs   []string `yaml:"ids"`
	Roles []string `yaml:"roles"`
}

// policyFile audits a proxy policy file (authz's YAML rules).
func (a *auditor) policyFile(path, own string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("policy file: %w", err)
	}
	a.r.Checked = append(a.r.Checked, "policy "+path)
	for _, f := range PolicyFindings(path, raw, own) {
		a.add(f.ID, f.Severity, f.Title, f.Evidence, f.Fix)
	}
	return nil
}

// PolicyFindings judges a proxy policy file's contents (named path in the
// evidence): every rule's ids, and whether the proxy can load it at all.
func PolicyFindings(path string, data []byte, own string) []Finding {
	var out []Finding
	if _, err := authz.Parse(data); err != nil {
		out = append(out, Finding{ID: "policy-invalid", Severity: Medium, Title: "a proxy policy file does not load",
			Evidence: fmt.Sprintf("%s: %v: the proxy does not start with it, or keeps its previous policy on reload", path, err),
			Fix:      "correct the rule named; mutual proxy inbound --policy FILE says the same at start"})
	}
	var doc struct {
		Rules []policyRule `yaml:"rules"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return out
	}
	for i, r := range doc.Rules {
		for _, s := range r.IDs {
			if f, ok := allowBreadth(s, own); ok {
				f.Evidence = fmt.Sprintf("%s rule %d: ids %s: %s", path, i+1, s, f.Evidence)
				out = append(out, f)
			}
		}
	}
	return out
}

// ownTrustDomain is this deployment's trust domain: the CA directory's,
// else Options.TrustDomain, else that of the proxy's own certificate.
func (a *auditor) ownTrustDomain(pc ProxyConfig) string {
	if a.td != "" {
		return a.td
	}
	if a.o.TrustDomain != "" {
		return a.o.TrustDomain
	}
	if pc.IdentityDir != "" {
		if chain, err := pki.ReadCertificates(filepath.Join(pc.IdentityDir, "cert.pem")); err == nil {
			for _, u := range chain[0].URIs {
				if u.Scheme == "spiffe" {
					return u.Host
				}
			}
		}
	}
	return ""
}

// proxyFiles audits the files a proxy's configuration names.
func (a *auditor) proxyFiles(pc ProxyConfig) {
	if pc.Policy != "" {
		if err := a.policyFile(pc.Policy, a.ownTrustDomain(pc)); err != nil {
			a.add("proxy-file-unreadable", Medium, "a file the proxy is configured with cannot be read",
				err.Error(), "correct --policy, or restore the file: the proxy does not start without it")
		}
	}
	if pc.IdentityDir != "" {
		if err := a.identityDir(pc.IdentityDir); err != nil {
			a.add("proxy-file-unreadable", Medium, "a file the proxy is configured with cannot be read",
				err.Error(), "correct --identity-dir, or enroll the proxy again: it does not start without its identity")
		}
	}
}
