package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/selector"
)

func entryCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "entry",
		Short: "Registration entries: which workloads on which nodes get which identity (admin)",
	}
	c.AddCommand(entryCreateCmd(e), entryListCmd(e), entryDeleteCmd(e))
	return c
}

type entryCreateOptions struct {
	adminFlags
	id        string
	nodes     []string
	selectors []string
	ttl       time.Duration
	dns       []string
	roles     []string
	json      bool
}

func entryCreateCmd(e *env) *cobra.Command {
	var o entryCreateOptions
	c := &cobra.Command{
		Use:   "create",
		Short: "Grant an identity to workloads on a node that match all the selectors",
		Long: `Grant --id to the workloads running on --node (a node ID, or a pattern such as
spiffe://TD/node/*) that match every --selector:

  unix:uid:N  unix:gid:N  unix:user:NAME  unix:path:/ABS/PATH  unix:sha256:HEX

The node's agent identifies callers of its Workload API by their Unix credentials;
the CA checks on every request that the entry grants its identity to that node.`,
		Example: `  mutual entry create --identity-dir ca/admin --id spiffe://example.org/ns/prod/web \
      --node spiffe://example.org/node/web-1 --selector unix:uid:1001 --selector unix:path:/usr/bin/web`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.id == "" {
				return flagError("id", "required: the SPIFFE ID to grant")
			}
			if _, err := spiffeid.FromString(o.id); err != nil {
				return flagError("id", "%q is not a SPIFFE ID: %v", o.id, err)
			}
			if len(o.nodes) == 0 {
				return flagError("node", "required: the node ID (spiffe://TD/node/NAME) whose workloads get it")
			}
			if _, err := selector.ParseAll(o.selectors); err != nil {
				return flagError("selector", "%v", err)
			}
			cl, err := o.client()
			if err != nil {
				return err
			}
			ent, err := cl.CreateEntry(cmd.Context(), api.EntryRequest{SPIFFEID: o.id, Nodes: o.nodes, Selectors: o.selectors,
				CertTTL: api.Duration(o.ttl), DNSNames: o.dns, Roles: o.roles})
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(ent)
			}
			fmt.Fprintf(e.stdout, "Entry %s: %s for workloads on %s matching %s\n", ent.ID, ent.SPIFFEID, strings.Join(ent.Nodes, ", "), strings.Join(ent.Selectors, " and "))
			return nil
		},
	}
	o.register(c)
	f := c.Flags()
	f.StringVar(&o.id, "id", "", "SPIFFE ID granted (required)")
	f.StringSliceVar(&o.nodes, "node", nil, "node ID or pattern whose workloads get it (repeatable, required)")
	f.StringSliceVar(&o.selectors, "selector", nil, "selector the workload must match (repeatable, required)")
	f.DurationVar(&o.ttl, "ttl", 0, "certificate lifetime (default: the CA's policy)")
	f.StringSliceVar(&o.dns, "dns", nil, "DNS name to put in the certificate (repeatable)")
	f.StringSliceVar(&o.roles, "role", nil, "role the certificate carries (repeatable)")
	f.BoolVar(&o.json, "json", false, "print as JSON")
	return c
}

func entryListCmd(e *env) *cobra.Command {
	var o adminFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List registration entries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			list, err := cl.ListEntries(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(list)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tIDENTITY\tNODES\tSELECTORS\tTTL")
			for _, en := range list.Entries {
				ttl := "default"
				if en.CertTTL > 0 {
					ttl = time.Duration(en.CertTTL).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", en.ID, en.SPIFFEID, strings.Join(en.Nodes, ","), strings.Join(en.Selectors, ","), ttl)
			}
			return tw.Flush()
		},
	}
	o.register(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func entryDeleteCmd(e *env) *cobra.Command {
	var o adminFlags
	c := &cobra.Command{
		Use:   "delete ENTRY_ID",
		Short: "Delete a registration entry (certificates already issued stay valid until they expire or are revoked)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := o.client()
			if err != nil {
				return err
			}
			if err := cl.DeleteEntry(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Deleted entry %s\n", args[0])
			return nil
		},
	}
	o.register(c)
	return c
}
