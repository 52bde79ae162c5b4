package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
)

// action is one state-changing operation beyond revoking one certificate:
// confirmed on a page of its own (GET /actions/KIND?target=), done by a
// POST with the CSRF token, the confirmation and a reason.
type action struct {
	// Title heads the confirmation page; What says what happens to the
	// target, Confirm what the operator ticks, Button the button's word.
	Title, What, Confirm, Button string
	// Reasons, when set, are the revocation reasons offered (the CA
	// records the one picked); else the operator writes a reason, which
	// the dashboard's log records with the action.
	Reasons []string
	// Back is the page the action returns to; Done says what was done,
	// with the target and the count of revoked certificates.
	Back, Done string
	// check refuses a target that cannot be right before asking the CA.
	check func(target string) error
	// do asks the CA and returns how many certificates it revoked.
	do func(ctx context.Context, target, reason string) (int, error)
}

// reasonMax bounds a written reason.
const reasonMax = 200

// actions are the operations the dashboard offers, by kind.
func (d *Dashboard) actions() map[string]action {
	ca := d.cfg.CA
	anything := func(t string) error {
		if t == "" || len(t) > 1024 {
			return fmt.Errorf("no target named")
		}
		return nil
	}
	return map[string]action{
		"revoke-identity": {
			Title: "Revoke an identity", What: "Revoke every unexpired certificate of", Confirm: "revoke every certificate of this identity now. It cannot be undone; a workload gets it back only through a new token or entry.",
			Button: "Revoke all", Reasons: revocationReasons, Back: "/identities", Done: "Revoked %[2]d certificate(s) of %[1]s. Subscribed proxies and agents refuse them now.",
			check: func(t string) error {
				id, err := spiffeid.FromString(t)
				if err != nil {
					return fmt.Errorf("not a SPIFFE ID: %w", err)
				}
				if id.TrustDomain() != d.cfg.Identity.ID.TrustDomain() {
					return fmt.Errorf("%s is not of this CA's trust domain %s", id, d.cfg.Identity.ID.TrustDomain().Name())
				}
				return nil
			},
			do: func(ctx context.Context, t, reason string) (int, error) {
				r, err := ca.Revoke(ctx, api.RevokeRequest{SPIFFEID: t, Reason: reason})
				if err != nil {
					return 0, err
				}
				return len(r.Revoked), nil
			},
		},
		"void-token": {
			Title: "Void a join token", What: "Make this unused join token expire now:", Confirm: "no one can enroll with this token from now on.",
			Button: "Void", Back: "/identities#tokens", Done: "Voided the join token %[1]s.", check: anything,
			do: func(ctx context.Context, t, _ string) (int, error) { return 0, ca.VoidToken(ctx, t) },
		},
		"delete-entry": {
			Title: "Delete a registration entry", What: "Delete the registration entry", Confirm: "agents stop serving this entry's identity to new workloads; certificates already issued stay valid until they expire or are revoked.",
			Button: "Delete", Back: "/identities#entries", Done: "Deleted the registration entry %[1]s.", check: anything,
			do: func(ctx context.Context, t, _ string) (int, error) { return 0, ca.DeleteEntry(ctx, t) },
		},
		"end-partner": {
			Title: "End a partnership", What: "End the partnership with", Confirm: "revoke every certificate of this partner and drop its bundle now, in one transaction. It cannot be undone.",
			Button: "End partnership", Back: "/federation#partners", Done: "Ended the partnership with %[1]s; %[2]d certificate(s) revoked.", check: anything,
			do: func(ctx context.Context, t, _ string) (int, error) {
				r, err := ca.EndPartner(ctx, t)
				if err != nil {
					return 0, err
				}
				return len(r.Revoked), nil
			},
		},
	}
}

// confirmData is an action's confirmation page.
type confirmData struct {
	action
	Kind, Target, Reason, Err string
}

// confirmAction shows the confirmation page of an action.
func (d *Dashboard) confirmAction(w http.ResponseWriter, r *http.Request) {
	d.showConfirm(w, r, http.StatusOK, r.URL.Query().Get("target"), "", "")
}

func (d *Dashboard) showConfirm(w http.ResponseWriter, r *http.Request, status int, target, reason, msg string) {
	kind := r.PathValue("kind")
	a, ok := d.acts[kind]
	if !ok {
		d.fail(w, r, http.StatusNotFound, "No such action: "+kind)
		return
	}
	if err := a.check(target); err != nil && msg == "" {
		d.fail(w, r, http.StatusBadRequest, a.Title+": "+err.Error())
		return
	}
	d.render(w, r, status, "confirm", a.Title, confirmData{action: a, Kind: kind, Target: target, Reason: reason, Err: msg})
}

// doAction carries out a confirmed action and returns to its page.
func (d *Dashboard) doAction(w http.ResponseWriter, r *http.Request) {
	kind := r.PathValue("kind")
	a, ok := d.acts[kind]
	if !ok {
		d.fail(w, r, http.StatusNotFound, "No such action: "+kind)
		return
	}
	target, reason := r.PostFormValue("target"), strings.TrimSpace(r.PostFormValue("reason"))
	if err := a.check(target); err != nil {
		d.fail(w, r, http.StatusBadRequest, a.Title+": "+err.Error())
		return
	}
	switch {
	case r.PostFormValue("confirm") != "yes":
		d.showConfirm(w, r, http.StatusBadRequest, target, reason, "Nothing done: tick the confirmation box.")
		return
	case a.Reasons != nil && !slices.Contains(a.Reasons, reason):
		d.showConfirm(w, r, http.StatusBadRequest, target, reason, "Nothing done: pick one of the reasons offered.")
		return
	case a.Reasons == nil && (reason == "" || len(reason) > reasonMax):
		d.showConfirm(w, r, http.StatusBadRequest, target, reason, fmt.Sprintf("Nothing done: say why, in at most %d characters.", reasonMax))
		return
	}
	n, err := a.do(r.Context(), target, reason)
	if err != nil {
		d.showConfirm(w, r, http.StatusBadGateway, target, reason, "Nothing done: "+err.Error())
		return
	}
	d.log.Info("dashboard action", "action", kind, "target", target, "reason", reason, "revoked", n, "by", d.cfg.Identity.ID.String(), "remote", r.RemoteAddr)
	back, frag, _ := strings.Cut(a.Back, "#")
	q := url.Values{"done": {kind}, "target": {target}, "n": {strconv.Itoa(n)}}
	q.Set("sig", d.doneSig(q))
	if frag != "" {
		frag = "#" + frag
	}
	http.Redirect(w, r, back+"?"+q.Encode()+frag, http.StatusSeeOther)
}

// doneMessage says what the action named in a page's query (after the
// redirect) did, or "".
func (d *Dashboard) doneMessage(r *http.Request) string {
	q := r.URL.Query()
	a, ok := d.acts[q.Get("done")]
	if !ok || r.Method != http.MethodGet {
		return ""
	}
	// Only the dashboard's own redirect says something was done: a link
	// crafted elsewhere cannot make the page claim it.
	if !hmac.Equal([]byte(q.Get("sig")), []byte(d.doneSig(q))) {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	return fmt.Sprintf(a.Done, q.Get("target"), n)
}

// doneSig authenticates a done message's parameters under the dashboard's
// key.
func (d *Dashboard) doneSig(q url.Values) string {
	m := hmac.New(sha256.New, d.csrfKey[:])
	fmt.Fprintf(m, "done\x00%s\x00%s\x00%s", q.Get("done"), q.Get("target"), q.Get("n"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
