package store

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// tokenReads coalesces concurrent GetToken calls on PostgreSQL into one
// query: an enrollment reads its token before it signs, and read alone
// each costs the database a statement, a transaction and a round trip,
// more than its share of the batch that then records the enrollment.
//
// Without a goroutine of its own: the first caller to find no read under
// way leads one, of every token asked for until then; when it is done it
// hands the lead to the first caller still waiting, if any, so that no
// caller waits for more than the read under way and its own.
type tokenReads struct {
	mu      sync.Mutex
	pending []*tokenRead
	running bool
}

// tokenRead is one GetToken call waiting for its token.
type tokenRead struct {
	id   string
	tok  Token
	err  error
	lead bool          // set, under mu, for the caller that reads next
	done chan struct{} // closed once tok and err are set, or lead
}

// maxTokenReads bounds how many tokens one query reads.
const maxTokenReads = 256

// selectTokens reads several tokens.
const selectTokens = "SELECT " + tokenColumns + " FROM tokens WHERE id = ANY($1::TEXT[])"

// get is GetToken through g.
func (g *tokenReads) get(ctx context.Context, db *DB, id string) (Token, error) {
	r := &tokenRead{id: id, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, r)
	leads := !g.running
	r.lead, g.running = leads, true
	g.mu.Unlock()
	if !leads {
		select {
		case <-r.done:
		case <-ctx.Done():
			g.mu.Lock()
			i := slices.Index(g.pending, r)
			if i >= 0 && !r.lead {
				g.pending = slices.Delete(g.pending, i, i+1)
				g.mu.Unlock()
				return Token{}, fmt.Errorf("read token %s: %w", id, ctx.Err())
			}
			g.mu.Unlock()
			// Its read is under way, or it leads the next: either ends.
			<-r.done
		}
		if !r.lead {
			return r.tok, r.err
		}
	}
	// Let the callers already woken (by the commit of a batch, say) ask
	// first: they join this read rather than each lead one of their own.
	runtime.Gosched()
	g.mu.Lock()
	batch := g.pending[:min(len(g.pending), maxTokenReads)]
	g.pending = g.pending[len(batch):]
	g.mu.Unlock()
	// Handed on even if the read panics (net/http recovers a handler's
	// panic): a lead never handed on would stall every later read.
	defer g.handOff()
	db.readTokens(batch)
	return r.tok, r.err
}

// handOff makes the first waiting read the next leader, or ends the run.
func (g *tokenReads) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) > 0 {
		next := g.pending[0]
		next.lead = true
		close(next.done)
		return
	}
	g.running = false
}

// readTokens reads the tokens of batch in one query and answers each
// read but the leader's (which returns its own).
func (db *DB) readTokens(batch []*tokenRead) {
	// The read outlives any one caller's cancellation.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.id
		// What a read not reached below answers (a panic): never a token.
		r.err = fmt.Errorf("read token %s: the read was interrupted; retry", r.id)
	}
	defer func() {
		for _, r := range batch {
			if !r.lead {
				close(r.done)
			}
		}
	}()
	found, err := db.queryTokens(ctx, ids)
	for _, r := range batch {
		t, ok := found[r.id]
		switch {
		case err != nil:
			r.err = fmt.Errorf("read token %s: %w", r.id, err)
		case !ok:
			r.err = fmt.Errorf("token %s: %w", r.id, ErrNotFound)
		default:
			r.tok, r.err = t, nil
		}
	}
}

// queryTokens reads the tokens named by ids that exist.
func (db *DB) queryTokens(ctx context.Context, ids []string) (map[string]Token, error) {
	rows, err := db.reader.QueryContext(ctx, selectTokens, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	found := make(map[string]Token, len(ids))
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		found[t.ID] = t
	}
	return found, rows.Err()
}
