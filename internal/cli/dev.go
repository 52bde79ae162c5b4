package cli

import (
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/dev"
)

func devCmd(e *env) *cobra.Command {
	var o dev.Options
	var verbose bool
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole system on loopback in one process, with a ready-made join token",
		Long: `Run a CA and its service on a free loopback port with the embedded store, and
print a join token and the commands to enroll, renew and inspect a workload.
The CA lives in a temporary directory unless --dir keeps it. Ctrl-C stops it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Command = selfCommand()
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			o.Log = e.logger(level)
			return dev.Run(cmd.Context(), o, e.stdout)
		},
	}
	c.Flags().StringVar(&o.Dir, "dir", "", "keep the dev CA in this directory (reused when it exists)")
	c.Flags().StringVar(&o.Listen, "listen", "", "CA service address (default: a free port on 127.0.0.1)")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "log every request")
	return c
}

// selfCommand is how the user invoked mutual, for printed instructions.
func selfCommand() string {
	exe := os.Args[0]
	if strings.Contains(exe, "go-build") {
		return "go run ./cmd/mutual"
	}
	if strings.Contains(exe, "/") {
		return exe
	}
	return "mutual"
}
