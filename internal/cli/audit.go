package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/audit"
)

func auditCmd(e *env) *cobra.Command {
	var o audit.Options
	var failOn string
	var asJSON bool
	c := &cobra.Command{
		Use:   "audit [HOST:PORT ...]",
		Short: "Find the misconfigurations that undo mTLS; exit non-zero above a severity",
		Long: `Audit a CA directory (--ca), a trust bundle (--bundle), a proxy's recorded
configuration (--proxy-config, YAML: mode, tls12, ca, metrics, allow, policy,
identity-dir; for an outbound proxy direction: outbound, expect, server-name),
the proxies installed from the packages (--etc /etc/mutual: the flags in each
proxy-inbound-NAME.env and proxy-outbound-NAME.env, the policy file and
identity directory they name, /migration on their --metrics listener), policy
files (--policy), identity directories (--identity-dir), the CA's list of
issued certificates (--ca-url, read with the --ca directory's admin identity)
and live endpoints (HOST:PORT), and report each finding with severity,
evidence and fix:

  bundle-public-root, bundle-foreign-ca   a bundle that trusts public web roots or unrelated CAs
  bundle-unrelated-root                   an identity's bundle.pem trusting a root that did not issue its chain
  revocation-off                          a proxy that follows no revocation feed or CRL
  lifetime-above-policy, policy-lifetime  certificates that live too long (files, or the CA's list)
  allow-any, allow-foreign-wildcard,      allow patterns (flags or policy rules) that let in anyone,
  allow-whole-domain, allow-root-wildcard any identity of another trust domain's pattern, the whole
                                          trust domain, any ID of one segment
  policy-invalid, allow-invalid           a policy or pattern the proxy refuses to load
  weak-key, weak-signature                RSA < 2048, small curves, SHA-1 or MD5
  old-tls, weak-suites                    TLS below 1.2, CBC/RSA-kex/3DES suites
  permissive-mode                         a proxy left in optional mTLS (worse when nobody needs it)
  outbound-expect-broad                   an outbound proxy whose expect would accept other workloads as its server
  expiring, expired                       CA, server or admin certificates close to expiry
  key-permissions, key-unencrypted        key files (CA directory, identity directories) readable by
                                          others; CA keys not encrypted
  root-key-online                         the root key on the online CA host
  intermediate-unconstrained              an intermediate without name constraints

Exits 1 when a finding is at --fail-on severity or above, so it can gate a deployment.`,
		Example: `  mutual audit --ca ./ca --proxy-config proxy.yaml 127.0.0.1:8443 --fail-on medium
  mutual audit --ca /var/lib/mutual/ca --ca-url https://127.0.0.1:8443 --etc /etc/mutual`,
		RunE: func(cmd *cobra.Command, args []string) error {
			threshold, err := audit.ParseSeverity(failOn)
			if err != nil {
				return flagError("fail-on", "%v", err)
			}
			if o.CADir == "" && o.Bundle == "" && o.ProxyConfig == "" && o.EtcDir == "" && len(o.PolicyFiles) == 0 && len(o.IdentityDirs) == 0 && len(args) == 0 {
				return flagError("ca", "nothing to audit: give --ca, --bundle, --proxy-config, --etc, --policy, --identity-dir or HOST:PORT")
			}
			o.Targets = args
			r, err := audit.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				if err := e.printJSON(r); err != nil {
					return err
				}
			} else {
				for _, k := range r.CAKeys {
					fmt.Fprintf(e.stdout, "CA key %-13s %-16s %s%s\n", k.Role, k.Store, k.Location, keyValidity(k))
				}
				if len(r.Findings) == 0 {
					fmt.Fprintf(e.stdout, "no findings (checked: %v)\n", r.Checked)
				} else {
					tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
					for _, f := range r.Findings {
						fmt.Fprintf(tw, "%s\t%s\t%s\n\t\tevidence: %s\n\t\tfix: %s\n", f.Severity, f.ID, f.Title, f.Evidence, f.Fix)
					}
					tw.Flush()
				}
			}
			if len(r.Findings) > 0 && r.Worst() >= threshold {
				return fmt.Errorf("%d finding(s), the worst %s (at or above --fail-on %s)", len(r.Findings), r.Worst(), threshold)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.CADir, "ca", "", "CA directory to audit")
	f.StringVar(&o.Bundle, "bundle", "", "trust bundle used for client authentication (default: the CA's bundle.pem)")
	f.StringVar(&o.ProxyConfig, "proxy-config", "", "YAML description of a deployed proxy (mode, tls12, ca, metrics, allow; direction, expect, server-name for outbound)")
	f.StringVar(&o.EtcDir, "etc", "", "packaged configuration directory (/etc/mutual): audit every proxy-inbound-*.env and proxy-outbound-*.env")
	f.StringArrayVar(&o.PolicyFiles, "policy", nil, "proxy policy file to audit rule by rule (repeatable)")
	f.StringArrayVar(&o.IdentityDirs, "identity-dir", nil, "written identity directory to audit: key modes, bundle roots, lifetime (repeatable)")
	f.StringVar(&o.CAURL, "ca-url", "", "running CA (https://HOST:PORT) whose unexpired certificates are held to policy; needs --ca for its admin identity")
	f.StringVar(&o.TrustDomain, "trust-domain", "", "this deployment's trust domain, when --ca does not say it (wildcards of other domains are flagged)")
	f.DurationVar(&o.ExpiryWarning, "expiry-warning", 30*24*time.Hour, "flag CA, server and admin certificates expiring sooner")
	f.StringVar(&failOn, "fail-on", "high", "exit 1 when a finding is at this severity or above")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

// keyValidity says how old a CA key's certificate is and when it expires.
func keyValidity(k audit.CAKey) string {
	if k.NotAfter.IsZero() {
		return ""
	}
	return fmt.Sprintf(" (certificate from %s, %d days old, expires %s)", k.NotBefore.Format(time.DateOnly), int(time.Since(k.NotBefore).Hours()/24), k.NotAfter.Format(time.DateOnly))
}
