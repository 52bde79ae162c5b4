package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/ca"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
)

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	server      []string
	identityDir string
}

func (a *adminFlags) register(c *cobra.Command) {
	c.Flags().StringSliceVar(&a.server, "server", nil, "CA URL, https://HOST:PORT (repeatable; default: the identity directory's mutual.json)")
	c.Flags().StringVar(&a.identityDir, "identity-dir", "", "an admin identity directory, such as CA_DIR/admin (required)")
}

// client loads the admin identity and makes an API client with it.
func (a *adminFlags) client() (*client.Client, error) {
	if a.identityDir == "" {
		return nil, flagError("identity-dir", "required: an admin identity directory (CA_DIR/admin)")
	}
	id, err := identity.Load(a.identityDir)
	if err != nil {
		return nil, flagError("identity-dir", "%v", err)
	}
	if time.Now().After(id.Leaf().NotAfter) {
		return nil, flagError("identity-dir", "the admin certificate %s expired at %s", id.ID, id.Leaf().NotAfter.Format(time.RFC3339))
	}
	urls := a.server
	if len(urls) == 0 {
		if urls, err = client.LoadCAURLs(a.identityDir); err != nil {
			return nil, err
		}
	}
	if len(urls) == 0 {
		return nil, flagError("server", "required: the CA's URL, such as https://127.0.0.1:8443")
	}
	tc := id.TLSCertificate()
	c, err := client.New(urls, id.Roots, &tc)
	if err != nil {
		return nil, flagError("server", "%v", err)
	}
	return c, nil
}

func tokenCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Create and list single-use join tokens (admin)"}
	c.AddCommand(tokenCreateCmd(e), tokenListCmd(e))
	return c
}

type tokenCreateOptions struct {
	adminFlags
	identity string
	ttl      time.Duration
	certTTL  time.Duration
	dns      []string
	ips      []string
	roles    []string
	json     bool
}

func tokenCreateCmd(e *env) *cobra.Command {
	var o tokenCreateOptions
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a join token bound to one identity; prints the token",
		Long: `Create a single-use join token that lets one workload enroll as --identity.

The token is one string carrying the CA's address, the SHA-256 fingerprint of its
root and a secret; the CA stores only the secret's hash. Hand it to the workload
over a channel you trust; it expires after --ttl.`,
		Example: `  TOKEN=$(mutual token create --server https://127.0.0.1:8443 --identity-dir ca/admin \
      --identity spiffe://example.org/ns/prod/web --dns web.internal)
  MUTUAL_TOKEN="$TOKEN" mutual cert request --out ./web`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.identity == "" {
				return flagError("identity", "required: the SPIFFE ID the token grants, e.g. spiffe://example.org/ns/prod/web")
			}
			if _, err := spiffeid.FromString(o.identity); err != nil {
				return flagError("identity", "%q is not a SPIFFE ID: %v", o.identity, err)
			}
			cl, err := o.client()
			if err != nil {
				return err
			}
			resp, err := cl.CreateToken(cmd.Context(), api.TokenRequest{
				SPIFFEID: o.identity, TTL: api.Duration(o.ttl), CertTTL: api.Duration(o.certTTL),
				DNSNames: o.dns, IPAddresses: o.ips, Roles: o.roles,
			})
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(resp)
			}
			fmt.Fprintln(e.stdout, resp.Token)
			return nil
		},
	}
	o.register(c)
	f := c.Flags()
	f.StringVar(&o.identity, "identity", "", "SPIFFE ID the token grants (required)")
	f.DurationVar(&o.ttl, "ttl", 15*time.Minute, "how long the token can be used")
	f.DurationVar(&o.certTTL, "cert-ttl", 0, "lifetime of the certificate it yields (default: the CA's policy, 1h)")
	f.StringSliceVar(&o.dns, "dns", nil, "DNS name to put in the certificate (repeatable)")
	f.StringSliceVar(&o.ips, "ip", nil, "IP address to put in the certificate (repeatable)")
	f.StringSliceVar(&o.roles, "role", nil, "role the certificate carries, for authorization policies (repeatable)")
	f.BoolVar(&o.json, "json", false, "print the token and its details as JSON")
	return c
}

func tokenListCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			list, err := cl.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(list)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tIDENTITY\tSTATE\tEXPIRES\tCREATED BY")
			for _, t := range list.Tokens {
				state := "unused"
				switch {
				case t.UsedAt != nil:
					state = "used " + relative(*t.UsedAt, now)
				case !now.Before(t.ExpiresAt):
					state = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.SPIFFEID, state, relative(t.ExpiresAt, now), t.CreatedBy)
			}
			return tw.Flush()
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

type revokeOptions struct {
	adminFlags
	serial   string
	identity string
	node     string
	reason   string
	json     bool
}

func certRevokeCmd(e *env) *cobra.Command {
	var o revokeOptions
	c := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke a certificate by serial, an identity, or a node and its workloads (admin)",
		Long: `Revoke a certificate by --serial, every unexpired certificate of --identity, or a
--node with every workload certificate obtained through it. Subscribed proxies
and agents learn of it at once (push feed); the CRL and OCSP answers change too.
A revoked certificate can no longer renew. Revoking twice is harmless.
Reasons are RFC 5280's: unspecified, keyCompromise, cACompromise, affiliationChanged,
superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise.`,
		Example: `  mutual cert revoke --server https://127.0.0.1:8443 --identity-dir ca/admin --serial 3a0f... --reason keyCompromise`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := 0
			for _, v := range []string{o.serial, o.identity, o.node} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				return flagError("serial", "give exactly one of --serial, --identity or --node")
			}
			if _, err := pki.ParseRevocationReason(o.reason); err != nil {
				return flagError("reason", "%v", err)
			}
			if o.serial != "" {
				if _, err := ca.NormalizeSerial(o.serial); err != nil {
					return flagError("serial", "%v", err)
				}
			}
			cl, err := o.client()
			if err != nil {
				return err
			}
			resp, err := cl.Revoke(cmd.Context(), api.RevokeRequest{Serial: o.serial, SPIFFEID: o.identity, Node: o.node, Reason: o.reason})
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(resp)
			}
			for _, r := range resp.Revoked {
				note := "revoked"
				if r.AlreadyRevoked {
					note = "already revoked"
				}
				fmt.Fprintf(e.stdout, "%s  %s  %s\n", r.Serial, r.SPIFFEID, note)
			}
			return nil
		},
	}
	o.register(c)
	f := c.Flags()
	f.StringVar(&o.serial, "serial", "", "serial number to revoke (hex; colons allowed)")
	f.StringVar(&o.identity, "identity", "", "SPIFFE ID whose unexpired certificates to revoke")
	f.StringVar(&o.node, "node", "", "node ID to revoke, with every workload certificate obtained through it")
	f.StringVar(&o.reason, "reason", "unspecified", "RFC 5280 revocation reason")
	f.BoolVar(&o.json, "json", false, "print as JSON")
	return c
}

func certListCmd(e *env) *cobra.Command {
	var o adminFlags
	var id string
	var valid, asJSON bool
	var pageSize int
	c := &cobra.Command{
		Use:   "list",
		Short: "List issued certificates, newest first (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			if pageSize < 1 || pageSize > 100_000 {
				return flagError("page-size", "must be from 1 to 100000")
			}
			// Every page: a listing that silently stopped at the
			// server's page size would hide certificates.
			list := &api.CertificateList{Certificates: []api.CertificateInfo{}}
			if err := cl.ListAllCertificates(cmd.Context(), id, valid, pageSize, func(p *api.CertificateList) error {
				list.Certificates = append(list.Certificates, p.Certificates...)
				return nil
			}); err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(list)
			}
			return printCertList(e, list, time.Now())
		},
	}
	o.register(c)
	c.Flags().StringVar(&id, "identity", "", "only this SPIFFE ID")
	c.Flags().BoolVar(&valid, "valid", false, "only unexpired certificates")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	c.Flags().IntVar(&pageSize, "page-size", 1000, "certificates fetched per request (every page is listed)")
	return c
}

func printCertList(e *env, list *api.CertificateList, now time.Time) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tIDENTITY\tSTATE\tEXPIRES\tREQUESTED BY")
	for _, c := range list.Certificates {
		state := "valid"
		switch {
		case c.RevokedAt != nil:
			state = "revoked (" + c.RevocationReason + ")"
		case !now.Before(c.NotAfter):
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Serial, c.SPIFFEID, state, relative(c.NotAfter, now), c.RequestedBy)
	}
	return tw.Flush()
}
