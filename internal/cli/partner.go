package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mutual-tls/mutual/internal/api"
)

func partnerCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "partner",
		Short: "Partnerships: another organisation's scoped, time-bound identities, ended in one command (admin)",
		Long: `A partnership gives another organisation identities under spiffe://TD/partner/NAME/...:
their certificates carry the partnership's roles and never outlive it. A partner with its own
PKI is federated (mutual federation add) and named with --trust-domain.

Its scope says what its identities (and, with --trust-domain, every identity of that trust
domain) may reach: services by SPIFFE ID pattern (--allow-service, at least one) and, for HTTP,
methods and paths (--allow-request "GET,HEAD /v1/orders/", "* /status"; none means every
request). Inbound proxies that know the CA enforce it on top of their own policy and apply a
change (mutual partner scope) within seconds, on open connections too; they report which
partner identities they saw, shown by list and show. Ending the partnership
(mutual partner end, or its --until date passing) revokes every certificate issued under it,
voids its unused tokens and drops its federated bundle, in one transaction; subscribed proxies
close the partner's connections as for any revocation.`,
	}
	c.AddCommand(partnerCreateCmd(e), partnerListCmd(e), partnerShowCmd(e), partnerScopeCmd(e), partnerTokenCmd(e), partnerEndCmd(e))
	return c
}

func partnerCreateCmd(e *env) *cobra.Command {
	var o adminFlags
	var req api.PartnerRequest
	var until string
	var forDur time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a partnership ending at --until (or after --for)",
		Example: `  mutual partner create acme --identity-dir ca/admin --for 720h \
    --allow-service spiffe://example.org/ns/prod/orders --allow-request "GET,HEAD /v1/orders/"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			switch {
			case until != "" && forDur != 0:
				return flagError("until", "give --until or --for, not both")
			case until != "":
				t, err := time.Parse(time.RFC3339, until)
				if err != nil {
					return flagError("until", "%q: want a time such as 2027-01-31T18:00:00Z", until)
				}
				req.EndsAt = t
			case forDur > 0:
				req.EndsAt = time.Now().Add(forDur)
			default:
				return flagError("until", "required: when the partnership ends (--until TIME or --for DURATION)")
			}
			cl, err := o.client()
			if err != nil {
				return err
			}
			p, err := cl.CreatePartner(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(p)
			}
			fmt.Fprintf(e.stdout, "Partnership %s: identities under %s until %s, reaching %s\n", p.Name, p.IDPrefix, p.EndsAt.Format(time.RFC3339), scopeString(p.PartnerScope))
			return nil
		},
	}
	o.register(c)
	f := c.Flags()
	scopeFlags(f, &req.PartnerScope)
	f.StringVar(&until, "until", "", "when the partnership ends (RFC 3339)")
	f.DurationVar(&forDur, "for", 0, "how long the partnership lasts from now")
	f.StringSliceVar(&req.Roles, "role", nil, "role its certificates carry (repeatable)")
	f.StringVar(&req.TrustDomain, "trust-domain", "", "the partner's federated trust domain, dropped when the partnership ends")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func partnerListCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List partnerships",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			list, err := cl.ListPartners(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(list)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTRUST DOMAIN\tROLES\tUNTIL\tSTATE\tLIVE CERTS\tSOONEST EXPIRY\tLAST SEEN")
			for _, p := range list.Partners {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", p.Name, orDash(p.TrustDomain), orDash(strings.Join(p.Roles, ",")), p.EndsAt.Format(time.RFC3339),
					partnerState(p), p.Live, timeOrDash(p.SoonestExpiry), lastSeen(p.LastSeen))
			}
			return tw.Flush()
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func partnerState(p api.Partner) string {
	if p.EndedAt != nil {
		return "ended " + p.EndedAt.Format(time.RFC3339) + " by " + p.EndedBy
	}
	return "active"
}

func partnerShowCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a partnership and the certificates issued under it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			d, err := cl.ShowPartner(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(d)
			}
			return printPartner(e.stdout, d)
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

// printPartner prints a partnership, what it holds and where it was seen.
func printPartner(w io.Writer, d *api.PartnerDetail) error {
	fmt.Fprintf(w, "Partnership %s (%s): identities under %s, roles %s, until %s\n", d.Name, partnerState(d.Partner), d.IDPrefix,
		orDash(strings.Join(d.Roles, ",")), d.EndsAt.Format(time.RFC3339))
	fmt.Fprintf(w, "Reaches: %s\n", scopeString(d.PartnerScope))
	fmt.Fprintf(w, "Holds: %d live certificate(s), the first expiring %s\n", d.Live, timeOrDash(d.SoonestExpiry))
	fmt.Fprintf(w, "Last seen: %s\n\n", lastSeen(d.LastSeen))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tIDENTITY\tNOT AFTER\tREVOKED")
	for _, c := range d.Certificates {
		revoked := "-"
		if c.RevokedAt != nil {
			revoked = c.RevokedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Serial, c.SPIFFEID, c.NotAfter.Format(time.RFC3339), revoked)
	}
	if err := tw.Flush(); err != nil || len(d.Sightings) == 0 {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tSEEN BY PROXY\tAT")
	for _, v := range d.Sightings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.SPIFFEID, v.Proxy, v.At.Format(time.RFC3339))
	}
	return tw.Flush()
}

func partnerTokenCmd(e *env) *cobra.Command {
	var o adminFlags
	var req api.PartnerTokenRequest
	var ttl time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:     "token NAME",
		Short:   "Make a join token for spiffe://TD/partner/NAME/PATH (a partner without its own PKI)",
		Example: `  mutual partner token acme --path billing-client --identity-dir ca/admin`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Path == "" {
				return flagError("path", "required: the identity under the partnership (billing-client)")
			}
			req.TTL = api.Duration(ttl)
			cl, err := o.client()
			if err != nil {
				return err
			}
			tok, err := cl.PartnerToken(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(tok)
			}
			fmt.Fprintln(e.stdout, tok.Token)
			return nil
		},
	}
	o.register(c)
	c.Flags().StringVar(&req.Path, "path", "", "identity path under spiffe://TD/partner/NAME/ (required)")
	c.Flags().DurationVar(&ttl, "ttl", 0, "how long the token stays usable (never past the partnership)")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func partnerEndCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "end NAME",
		Short: "End a partnership now: revoke everything issued under it and drop its federated bundle",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			resp, err := cl.EndPartner(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(resp)
			}
			fmt.Fprintf(e.stdout, "Ended partnership %s: %d certificate(s) revoked\n", args[0], len(resp.Revoked))
			return nil
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func partnerScopeCmd(e *env) *cobra.Command {
	var o adminFlags
	var scope api.PartnerScope
	var asJSON bool
	c := &cobra.Command{
		Use:   "scope NAME",
		Short: "Replace what a partnership may reach; proxies apply it within seconds, to open connections too",
		Example: `  mutual partner scope acme --identity-dir ca/admin \
    --allow-service spiffe://example.org/ns/prod/orders --allow-request "GET /v1/orders/"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(scope.Services) == 0 {
				return flagError("allow-service", "required: the services the partnership may reach (a SPIFFE ID pattern, repeatable)")
			}
			cl, err := o.client()
			if err != nil {
				return err
			}
			p, err := cl.SetPartnerScope(cmd.Context(), args[0], scope)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(p)
			}
			fmt.Fprintf(e.stdout, "Partnership %s now reaches %s\n", p.Name, scopeString(p.PartnerScope))
			return nil
		},
	}
	o.register(c)
	scopeFlags(c.Flags(), &scope)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

// scopeFlags registers the flags of a partnership's scope.
func scopeFlags(f *pflag.FlagSet, s *api.PartnerScope) {
	f.StringArrayVar(&s.Services, "allow-service", nil, "a service the partner may reach, by SPIFFE ID pattern: spiffe://TD/ns/prod/api, spiffe://TD/ns/prod/* (repeatable; at least one)")
	f.StringArrayVar(&s.Requests, "allow-request", nil, `methods and path the partner may request: "GET,HEAD /v1/orders/", "* /status" (repeatable; none: every request)`)
}

// scopeString says what a scope reaches in one line.
func scopeString(s api.PartnerScope) string {
	if len(s.Services) == 0 {
		return "nothing (no service: set one with mutual partner scope)"
	}
	reqs := "every request"
	if len(s.Requests) > 0 {
		reqs = strings.Join(s.Requests, "; ")
	}
	return strings.Join(s.Services, ", ") + ": " + reqs
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func lastSeen(s *api.Sighting) string {
	if s == nil {
		return "never"
	}
	return s.At.Format(time.RFC3339) + " by " + s.Proxy + " (" + s.SPIFFEID + ")"
}
