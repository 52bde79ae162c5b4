package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/api"
)

func partnerCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "partner",
		Short: "Partnerships: another organisation's scoped, time-bound identities, ended in one command (admin)",
		Long: `A partnership gives another organisation identities under spiffe://TD/partner/NAME/...:
their certificates carry the partnership's roles and never outlive it. A partner with its own
PKI is federated (mutual federation add) and named with --trust-domain. Ending the partnership
(mutual partner end, or its --until date passing) revokes every certificate issued under it,
voids its unused tokens and drops its federated bundle, in one transaction; subscribed proxies
close the partner's connections as for any revocation.`,
	}
	c.AddCommand(partnerCreateCmd(e), partnerListCmd(e), partnerShowCmd(e), partnerTokenCmd(e), partnerEndCmd(e))
	return c
}

func partnerCreateCmd(e *env) *cobra.Command {
	var o adminFlags
	var req api.PartnerRequest
	var until string
	var forDur time.Duration
	var asJSON bool
	c := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a partnership ending at --until (or after --for)",
		Example: `  mutual partner create acme --identity-dir ca/admin --role reader --for 720h`,
		Args:    cobra.ExactArgs(1),
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
			fmt.Fprintf(e.stdout, "Partnership %s: identities under %s until %s\n", p.Name, p.IDPrefix, p.EndsAt.Format(time.RFC3339))
			return nil
		},
	}
	o.register(c)
	f := c.Flags()
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
			fmt.Fprintln(tw, "NAME\tTRUST DOMAIN\tROLES\tUNTIL\tSTATE")
			for _, p := range list.Partners {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, orDash(p.TrustDomain), orDash(strings.Join(p.Roles, ",")), p.EndsAt.Format(time.RFC3339), partnerState(p))
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
			fmt.Fprintf(e.stdout, "Partnership %s (%s): identities under %s, roles %s, until %s\n", d.Name, partnerState(d.Partner), d.IDPrefix,
				orDash(strings.Join(d.Roles, ",")), d.EndsAt.Format(time.RFC3339))
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERIAL\tIDENTITY\tNOT AFTER\tREVOKED")
			for _, c := range d.Certificates {
				revoked := "-"
				if c.RevokedAt != nil {
					revoked = c.RevokedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Serial, c.SPIFFEID, c.NotAfter.Format(time.RFC3339), revoked)
			}
			return tw.Flush()
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
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
