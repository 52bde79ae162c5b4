package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/buildinfo"
)

func versionCmd(e *env) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print which build of mutual this is: version, commit, build date",
		Long: `Print the module version, the VCS commit (with -dirty for uncommitted changes)
and its time, the build date and the Go version, from the build information in
the binary. A build from a work tree says "devel"; a field the build did not
record says "unknown". The same labels are on every daemon's /metrics as the
mutual_build_info gauge.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			in := buildinfo.Read()
			if asJSON {
				return e.printJSON(in)
			}
			_, err := fmt.Fprintf(e.stdout, "version:     %s\ncommit:      %s\ncommit time: %s\nbuild date:  %s\ngo:          %s\n",
				in.Version, in.Commit, in.CommitTime, in.BuildDate, in.GoVersion)
			return err
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
