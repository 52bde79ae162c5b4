package cli

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/internal/agent"
)

// DefaultSocket is the Workload API socket unless --socket says otherwise.
const DefaultSocket = "unix:///run/mutual/agent.sock"

type agentOptions struct {
	dir       string
	token     string
	tokenFile string
	socket    string
	metrics   string
	writes    []string
	sync      time.Duration
}

const agentLong = `Run the node agent. On first start it enrolls the node with a join token for
spiffe://TD/node/NAME from --token-file (or $MUTUAL_TOKEN); afterwards it renews
the node identity itself.

It fetches the registration entries granted to its node, obtains a certificate
for each (a key made here, never sent), rotates them at half their lifetime, and
serves them on the SPIFFE Workload API socket to the local processes whose Unix
credentials (uid, gid, user, executable path and hash) match the entry's
selectors. Unmodified go-spiffe clients work.

Everything lives under --dir (keys 0600), so a restart during a CA outage still
serves. If the node certificate expires during a CA outage (a WARN line and
mutual_agent_node_expiring=1 come at three quarters of its life), write a new
join token for the same node to --token-file: the agent re-enrolls without a
restart. --write keeps an identity directory current for programs that read files:

  --write spiffe://TD/ns/prod/web=/etc/web/tls,owner=www-data,mode=0640,reload='nginx -s reload'`

func agentCmd(e *env) *cobra.Command {
	var o agentOptions
	c := &cobra.Command{
		Use:     "agent",
		Short:   "Run the node agent: serve workload identities over the SPIFFE Workload API and as files",
		Long:    agentLong,
		Example: `  mutual agent --dir /var/lib/mutual/agent --token-file /etc/mutual/node-token --socket unix:///run/mutual/agent.sock`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(e)
			if err != nil {
				return err
			}
			if onCommandLine(cmd, "token") {
				cfg.Log.Warn(tokenOnArgvWarning, "flag", "token")
			}
			return agent.Run(cmd.Context(), cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "state directory (required)")
	f.StringVar(&o.token, "token", "", "join token for the node identity, on first start; every user of this machine sees it in the process list: use --token-file or $MUTUAL_TOKEN")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the join token; read again while the node certificate is expired, to re-enroll (recommended over --token)")
	f.StringVar(&o.socket, "socket", DefaultSocket, "Workload API socket")
	f.StringVar(&o.metrics, "metrics", "", "address for Prometheus /metrics (off when empty)")
	f.StringArrayVar(&o.writes, "write", nil, "ID=DIR[,owner=USER][,mode=0640][,reload=CMD]: keep an identity directory current (repeatable)")
	f.DurationVar(&o.sync, "sync-interval", 5*time.Second, "how often to fetch registration entries")
	return c
}

// config checks the agent's flags and turns them into its configuration.
func (o *agentOptions) config(e *env) (agent.Config, error) {
	if o.dir == "" {
		return agent.Config{}, flagError("dir", "required: the agent's state directory")
	}
	sock, ok := strings.CutPrefix(o.socket, "unix://")
	if !ok || !strings.HasPrefix(sock, "/") {
		return agent.Config{}, flagError("socket", "%q: use unix:///absolute/path.sock", o.socket)
	}
	// --token-file may be empty or missing once enrolled: the agent reads
	// it again if the node certificate ever expires.
	tokenFile := o.tokenFile
	if tokenFile == "-" {
		return agent.Config{}, flagError("token-file", "the agent reads the token file again to re-enroll after an outage, which standard input (-) cannot be: give a file")
	}
	if _, err := os.Stat(tokenFile); tokenFile != "" && errors.Is(err, os.ErrNotExist) {
		tokenFile = ""
	}
	tok, err := readToken(e, o.token, tokenFile)
	if err != nil {
		return agent.Config{}, err
	}
	var writes []agent.WriteSpec
	for _, w := range o.writes {
		ws, err := agent.ParseWriteSpec(w)
		if err != nil {
			return agent.Config{}, err
		}
		writes = append(writes, ws)
	}
	return agent.Config{
		StateDir: o.dir, Token: tok, TokenFile: o.tokenFile, Socket: sock, Writes: writes, SyncInterval: o.sync,
		Log: e.logger(slog.LevelInfo).With("component", "agent"), Metrics: o.metrics,
	}, nil
}
