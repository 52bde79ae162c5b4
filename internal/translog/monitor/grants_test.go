package monitor_test

import (
	"context"
	"errors"
	"testing"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/monitor"
)

// fakeCA answers the admin API's list calls from fixed lists, or fails.
type fakeCA struct {
	tokens  []api.TokenInfo
	entries []api.Entry
	err     error
	closed  int
}

func (f *fakeCA) ListTokens(context.Context) (*api.TokenList, error) {
	return &api.TokenList{Tokens: f.tokens}, f.err
}

func (f *fakeCA) ListEntries(context.Context) (*api.EntryList, error) {
	return &api.EntryList{Entries: f.entries}, nil
}

func (f *fakeCA) CloseIdleConnections() { f.closed++ }

func TestGrantsExplains(t *testing.T) {
	ca := &fakeCA{
		tokens:  []api.TokenInfo{{ID: "T1", SPIFFEID: "spiffe://example.org/ns/a"}},
		entries: []api.Entry{{ID: "E1", SPIFFEID: "spiffe://example.org/ns/b"}},
	}
	g, err := monitor.LoadGrants(context.Background(), ca)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		by   translog.Requester
		id   string
		want string
	}{
		{translog.TokenRequester("T1"), "spiffe://example.org/ns/a", ""},
		{translog.EntryRequester("E1"), "spiffe://example.org/ns/b", ""},
		{translog.TokenRequester("T1"), "spiffe://example.org/ns/b", "token:T1 granted spiffe://example.org/ns/a, not spiffe://example.org/ns/b"},
		{translog.TokenRequester("T2"), "spiffe://example.org/ns/a", "token:T2 is unknown to the CA"},
		// An entry ID is no token ID, and the other way round.
		{translog.EntryRequester("T1"), "spiffe://example.org/ns/a", "entry:T1 is unknown to the CA"},
		{translog.RenewalRequester("ab"), "spiffe://example.org/ns/a", "renew:ab is unknown to the CA"},
	} {
		if got := g.Explains(c.by, c.id); got != c.want {
			t.Errorf("Explains(%s, %s) = %q, want %q", c.by, c.id, got, c.want)
		}
	}
}

func TestLoadGrantsFails(t *testing.T) {
	boom := errors.New("connection refused")
	if _, err := monitor.LoadGrants(context.Background(), &fakeCA{err: boom}); !errors.Is(err, boom) {
		t.Errorf("LoadGrants over a failing CA: %v, want it to wrap the cause", err)
	}
}
