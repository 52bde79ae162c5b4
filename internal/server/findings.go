package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/store"
)

// Findings keeps what the issuance log's monitor reports; *store.DB
// provides it.
type Findings interface {
	RecordFindings(ctx context.Context, fs []store.Finding, by string, now time.Time) error
	ListFindings(ctx context.Context, limit int) ([]store.Finding, int, error)
}

// routeFindings adds the monitor's findings (admin) when the Config has a
// place to keep them: a monitor holding an admin identity reports, the
// dashboard reads.
func (s *Server) routeFindings() {
	if s.cfg.Findings == nil {
		return
	}
	s.route("POST /v1/log/findings", "log_findings_report", s.admin(s.reportFindings))
	s.route("GET /v1/log/findings", "log_findings_list", s.admin(s.listFindings))
}

func (s *Server) reportFindings(w http.ResponseWriter, r *http.Request, by spiffeid.ID) (int, error) {
	var req api.FindingsReport
	if err := api.Decode(r.Body, &req); err != nil {
		return 0, badRequest{err}
	}
	if len(req.Findings) > api.MaxFindingsPerReport {
		return 0, badRequest{fmt.Errorf("%d findings in one report; send at most %d at a time", len(req.Findings), api.MaxFindingsPerReport)}
	}
	fs := make([]store.Finding, 0, len(req.Findings))
	for i, f := range req.Findings {
		if f.Rule == "" || f.LogIndex < 0 {
			return 0, badRequest{fmt.Errorf("finding %d: a rule and a log index (0 or more) are required", i)}
		}
		fs = append(fs, store.Finding{Rule: f.Rule, LogIndex: f.LogIndex, SPIFFEID: f.SPIFFEID, Serial: f.Serial, Detail: f.Detail})
	}
	if err := s.cfg.Findings.RecordFindings(r.Context(), fs, by.String(), time.Now()); err != nil {
		return 0, err
	}
	if len(fs) > 0 {
		s.log.Warn("log monitor findings reported", "count", len(fs), "by", by.String())
	}
	return ok(w, map[string]int{"recorded": len(fs)})
}

func (s *Server) listFindings(w http.ResponseWriter, r *http.Request, _ spiffeid.ID) (int, error) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 10_000 {
			return 0, badRequest{fmt.Errorf("limit %q: want a number from 1 to 10000", v)}
		}
		limit = n
	}
	fs, total, err := s.cfg.Findings.ListFindings(r.Context(), limit)
	if err != nil {
		return 0, err
	}
	out := api.FindingList{Findings: []api.Finding{}, Total: total}
	for _, f := range fs {
		out.Findings = append(out.Findings, api.Finding{Rule: f.Rule, LogIndex: f.LogIndex, SPIFFEID: f.SPIFFEID, Serial: f.Serial, Detail: f.Detail,
			ReportedBy: f.ReportedBy, FirstReported: f.FirstReported, LastReported: f.LastReported, Times: f.Times})
	}
	return ok(w, out)
}
