package dashboard

import (
	"context"
	"encoding/base64"
	"net/http"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/translog"
)

// logData is the issuance log's latest checkpoint, verified.
type logData struct {
	Checkpoint *translog.Checkpoint
	RootHash   string
	// Pinned says the checkpoint was verified with the key ca init wrote,
	// not only with the key the CA serves.
	Pinned bool
	Err    string
	// Findings are what the monitor reported to the CA, latest first.
	Findings findingsView
}

// findingsView is the log monitor's findings as the CA holds them.
type findingsView struct {
	List        []api.Finding
	Total       int
	FindingsErr string
}

// findingsShown bounds the findings the log page lists.
const findingsShown = 200

// findings reads the latest limit findings from the CA.
func (d *Dashboard) findings(ctx context.Context, limit int) findingsView {
	fl, err := d.cfg.CA.LogFindings(ctx, limit)
	if err != nil {
		return findingsView{FindingsErr: err.Error()}
	}
	return findingsView{List: fl.Findings, Total: fl.Total}
}

func (d *Dashboard) issuanceLog(w http.ResponseWriter, r *http.Request) {
	var data logData
	note, served, err := d.cfg.CA.LogCheckpoint(r.Context())
	key := d.cfg.LogKey
	data.Pinned = key != ""
	if key == "" {
		key = served
	}
	if err == nil {
		data.Checkpoint, err = translog.OpenCheckpoint(note, key)
	}
	if err != nil {
		data.Err = err.Error()
	} else {
		data.RootHash = base64.StdEncoding.EncodeToString(data.Checkpoint.Hash[:])
	}
	data.Findings = d.findings(r.Context(), findingsShown)
	d.render(w, r, http.StatusOK, "log", "Issuance log", data)
}
