package cli

import (
	"errors"
	"io/fs"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/inspect"
)

func inspectCmd(e *env) *cobra.Command {
	var bundle string
	var asJSON bool
	c := &cobra.Command{
		Use:   "inspect FILE|DIR|HOST:PORT",
		Short: "Explain the certificates in a PEM file, an identity directory or a TLS server's chain",
		Long: `Explain every certificate in a PEM file or an identity directory: identity,
issuer, validity ("expires in 3h"), key, usages, CA constraints, fingerprints;
whether the chain verifies against a bundle (--bundle, or the directory's own
bundle.pem) and whether the directory's key matches its certificate.`,
		Example: `  mutual inspect ./web
  mutual inspect cert.pem --bundle bundle.pem --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := inspect.Path(args[0], bundle, time.Now())
			if errors.Is(err, fs.ErrNotExist) && strings.Contains(args[0], ":") {
				r, err = inspect.Remote(cmd.Context(), args[0], bundle, time.Now())
			}
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(r)
			}
			r.WriteText(e.stdout)
			return nil
		},
	}
	c.Flags().StringVar(&bundle, "bundle", "", "PEM file of trusted roots to verify the chain against")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}
