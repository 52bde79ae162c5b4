package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/federation"
)

func federationCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "federation",
		Short: "SPIFFE federation: trust bundles of other trust domains, fetched from their bundle endpoints (admin)",
		Long: `This CA serves its own trust bundle, in the SPIFFE bundle format, at
https://CA` + federation.EndpointPath + ` (profiles https_web and https_spiffe; its SPIFFE ID is
spiffe://TD/mutual/server). A federation relationship makes it fetch another trust domain's
bundle on that bundle's refresh hint, keep the last good one when the endpoint is down, refuse
rollbacks, and hand it to agents; every change is recorded (mutual federation changes).`,
	}
	c.AddCommand(federationAddCmd(e), federationListCmd(e), federationRemoveCmd(e), federationChangesCmd(e))
	return c
}

type federationAddOptions struct {
	adminFlags
	req        api.FederationRequest
	bundleFile string
	webRoots   string
	json       bool
}

func federationAddCmd(e *env) *cobra.Command {
	var o federationAddOptions
	c := &cobra.Command{
		Use:   "add",
		Short: "Federate with a foreign trust domain: fetch its bundle from its bundle endpoint",
		Long: `Federate with --trust-domain, fetching its bundle from --endpoint-url.

  --profile https_spiffe  the endpoint is authenticated by its SPIFFE ID (--endpoint-id) under
                          the domain's bundle, exchanged once out of band (--bundle FILE)
  --profile https_web     the endpoint's certificate chains to a web root for its host name
                          (the system's, or --web-roots FILE)

--bundle takes a SPIFFE bundle (what the endpoint serves) or PEM certificates.`,
		Example: `  mutual federation add --identity-dir ca/admin --trust-domain partner.example \
      --endpoint-url https://spire.partner.example:8443 --profile https_spiffe \
      --endpoint-id spiffe://partner.example/spire/server --bundle partner-bundle.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.req.TrustDomain == "" {
				return flagError("trust-domain", "required: the foreign trust domain (partner.example)")
			}
			if o.req.EndpointURL == "" {
				return flagError("endpoint-url", "required: the foreign bundle endpoint (https://...)")
			}
			for _, file := range []struct {
				flag, path string
				into       *string
			}{{"bundle", o.bundleFile, &o.req.Bundle}, {"web-roots", o.webRoots, &o.req.WebRootsPEM}} {
				if file.path == "" {
					continue
				}
				data, err := os.ReadFile(file.path)
				if err != nil {
					return flagError(file.flag, "%v", err)
				}
				*file.into = string(data)
			}
			cl, err := o.client()
			if err != nil {
				return err
			}
			f, err := cl.AddFederation(cmd.Context(), o.req)
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(f)
			}
			fmt.Fprintf(e.stdout, "Federated with %s: its bundle is fetched from %s (%s)\n", f.TrustDomain, f.EndpointURL, f.Profile)
			return nil
		},
	}
	o.register(c)
	f := c.Flags()
	f.StringVar(&o.req.TrustDomain, "trust-domain", "", "foreign trust domain (required)")
	f.StringVar(&o.req.EndpointURL, "endpoint-url", "", "its bundle endpoint URL, https://... (required)")
	f.StringVar(&o.req.Profile, "profile", federation.ProfileSPIFFE, "bundle endpoint profile: https_spiffe or https_web")
	f.StringVar(&o.req.EndpointSPIFFEID, "endpoint-id", "", "the endpoint's SPIFFE ID (https_spiffe)")
	f.StringVar(&o.bundleFile, "bundle", "", "the domain's bundle, exchanged out of band: SPIFFE bundle JSON or PEM (required for https_spiffe)")
	f.StringVar(&o.webRoots, "web-roots", "", "PEM roots the https_web endpoint must chain to (default: the system's)")
	f.BoolVar(&o.json, "json", false, "print as JSON")
	return c
}

func federationListCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List federation relationships and the bundle held for each",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			list, err := cl.ListFederations(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(list)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TRUST DOMAIN\tPROFILE\tENDPOINT\tSEQUENCE\tKEYS\tLAST FETCH")
			for _, f := range list.Federations {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", f.TrustDomain, f.Profile, f.EndpointURL, f.Sequence, len(f.Keys), lastFetch(f))
			}
			return tw.Flush()
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func lastFetch(f api.Federation) string {
	switch {
	case f.LastAttempt == nil:
		return "never"
	case f.LastError != "":
		return f.LastAttempt.Format(time.RFC3339) + " failed: " + f.LastError
	}
	return f.LastAttempt.Format(time.RFC3339) + " ok"
}

func federationRemoveCmd(e *env) *cobra.Command {
	var o adminFlags
	c := &cobra.Command{
		Use:   "remove TRUST_DOMAIN",
		Short: "End a federation: stop fetching the domain's bundle and drop it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			if err := cl.RemoveFederation(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Removed the federation with %s and its bundle\n", args[0])
			return nil
		},
	}
	o.register(c)
	return c
}

func federationChangesCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	var td string
	c := &cobra.Command{
		Use:   "changes",
		Short: "Show who changed which federated bundle when, and which keys came and went",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			list, err := cl.BundleChanges(cmd.Context(), td)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(list)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AT\tTRUST DOMAIN\tACTION\tSEQUENCE\tBY\tADDED\tREMOVED")
			for _, ch := range list.Changes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", ch.At.Format(time.RFC3339), ch.TrustDomain, ch.Action, ch.Sequence, ch.By,
					strings.Join(ch.Added, ","), strings.Join(ch.Removed, ","))
			}
			return tw.Flush()
		},
	}
	o.register(c)
	c.Flags().StringVar(&td, "trust-domain", "", "only this trust domain")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
