package dashboard

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// pages holds one template set per page, each the layout with the page's
// "content".
type pages map[string]*template.Template

var pageNames = []string{"overview", "certificates", "certificate", "identities", "nodes", "log", "federation", "migration", "confirm", "error"}

func parsePages() (pages, error) {
	funcs := template.FuncMap{
		"when": when,
		"join": strings.Join,
	}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard templates: %w", err)
	}
	p := pages{}
	for _, name := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(assets, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", name, err)
		}
		p[name] = t
	}
	return p, nil
}

// view is what the layout renders around a page's content.
type view struct {
	Title string
	// Nav is the page's name, to mark it in the navigation.
	Nav         string
	TrustDomain string
	Operator    string
	CSRF        string
	// Done says what the action just carried out did.
	Done string
	Now  time.Time
	// Data is the page's own.
	Data any
}

// render writes the page name with data, or a failure if it cannot.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	v := view{Title: title, Nav: name, TrustDomain: d.cfg.Identity.ID.TrustDomain().Name(), Operator: d.cfg.Identity.ID.String(),
		CSRF: d.csrfFor(r), Done: d.doneMessage(r), Now: d.cfg.Now(), Data: data}
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		d.log.Error("dashboard page failed to render", "page", name, "error", err.Error())
		http.Error(w, "the page failed to render; the dashboard's log says why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail renders an error page with msg, and logs it.
func (d *Dashboard) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d.log.Info("dashboard request failed", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "status", status, "reason", msg)
	d.render(w, r, status, "error", http.StatusText(status), msg)
}

// when formats a time (or *time.Time) for a table: UTC, to the minute.
func when(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}
