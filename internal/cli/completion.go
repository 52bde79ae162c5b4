package cli

import (
	"github.com/spf13/cobra"
)

func completionCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script for bash, zsh or fish",
		Long: `Print a completion script for mutual's commands and flags.

The Debian package installs them; to load one by hand:

  bash: source <(mutual completion bash)
  zsh:  mutual completion zsh > "${fpath[1]}/_mutual"
  fish: mutual completion fish > ~/.config/fish/completions/mutual.fish`,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"bash", "zsh", "fish"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(e.stdout, true)
			case "zsh":
				return root.GenZshCompletion(e.stdout)
			default:
				return root.GenFishCompletion(e.stdout, true)
			}
		},
	}
}
