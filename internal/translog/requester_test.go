package translog_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/translog"
)

// The requester's stored form is hashed into existing logs: the typed value
// must write exactly the strings the CA always wrote, and read every stored
// string (known or not) back to the same bytes.
func TestRequesterKeepsTheStoredEncoding(t *testing.T) {
	for _, tt := range []struct {
		r    translog.Requester
		want string
		kind translog.RequesterKind
		ref  string
	}{
		{translog.TokenRequester("t1"), "token:t1", translog.RequestedByToken, "t1"},
		{translog.RenewalRequester("a0fff"), "renew:a0fff", translog.RequestedByRenewal, "a0fff"},
		{translog.EntryRequester("e:1"), "entry:e:1", translog.RequestedByEntry, "e:1"},
		{translog.CARequester("init"), "ca-init", translog.RequestedByCA, "init"},
		{translog.Requester("tokens:x"), "tokens:x", translog.RequestedByUnknown, "tokens:x"},
		{translog.Requester("test"), "test", translog.RequestedByUnknown, "test"},
	} {
		if string(tt.r) != tt.want || tt.r.Kind() != tt.kind || tt.r.Ref() != tt.ref {
			t.Errorf("%q: kind %q ref %q; want %q, %q, %q", tt.r, tt.r.Kind(), tt.r.Ref(), tt.want, tt.kind, tt.ref)
		}
	}
	// An entry as the CA wrote it before the type existed.
	stored := []byte(`{"v":1,"cert":"AQID","requested_by":"token:t1","issued_at":"2026-01-02T03:04:05Z"}`)
	e, err := translog.ParseEntry(stored)
	if err != nil {
		t.Fatal(err)
	}
	if e.RequestedBy.Kind() != translog.RequestedByToken || e.RequestedBy.Ref() != "t1" {
		t.Errorf("parsed requester %q: kind %q ref %q", e.RequestedBy, e.RequestedBy.Kind(), e.RequestedBy.Ref())
	}
	if again := e.Marshal(); !bytes.Equal(again, stored) {
		t.Errorf("re-encoded entry\n%s\nwant\n%s", again, stored)
	}
	if !e.IssuedAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("issued_at %v", e.IssuedAt)
	}
}
