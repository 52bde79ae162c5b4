package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestTokenReadsCoalesced: concurrent token reads on PostgreSQL, read
// together, each get their own token (the same one asked twice, and one
// that does not exist, among them), and a read whose caller gave up
// (cancelled while others were under way) neither answers nor blocks
// those after it.
func TestTokenReadsCoalesced(t *testing.T) {
	ctx := context.Background()
	db := openPostgresDB(t)
	now := time.Now()
	const n = 50
	for i := range n {
		if err := db.CreateToken(ctx, Token{ID: fmt.Sprintf("t%d", i), SecretHash: []byte("h"), SPIFFEID: fmt.Sprintf("spiffe://td/w/%d", i),
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make(chan error, 3*n)
		for i := range n {
			for _, id := range []string{fmt.Sprintf("t%d", i), fmt.Sprintf("t%d", i), fmt.Sprintf("missing%d", i)} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := db.GetToken(ctx, id)
					switch {
					case id[0] == 'm' && !errors.Is(err, ErrNotFound):
						errs <- fmt.Errorf("token %s: %v, want ErrNotFound", id, err)
					case id[0] == 't' && (err != nil || tok.ID != id || tok.SPIFFEID != fmt.Sprintf("spiffe://td/w/%s", id[1:])):
						errs <- fmt.Errorf("token %s: %+v, %v", id, tok, err)
					}
				}()
			}
			if i%10 == round {
				// A caller that gives up at once.
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := db.GetToken(cctx, "t0"); err != nil && !errors.Is(err, context.Canceled) {
						errs <- fmt.Errorf("cancelled read: %v, want the token or context.Canceled", err)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	db.tokenReads.mu.Lock()
	defer db.tokenReads.mu.Unlock()
	if db.tokenReads.running || len(db.tokenReads.pending) > 0 {
		t.Errorf("after every read: running %v, %d pending; want none", db.tokenReads.running, len(db.tokenReads.pending))
	}
}
