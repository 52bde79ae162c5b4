package dashboard

import (
	"encoding/base64"
	"net/http"

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
	d.render(w, r, http.StatusOK, "log", "Issuance log", data)
}
