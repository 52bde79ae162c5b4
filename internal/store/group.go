package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// batchTxTimeout bounds one issuance batch's transaction (see
// commitBatchTx); a variable for the tests.
var batchTxTimeout = 30 * time.Second

// maxBatch bounds how many issuances share one SQLite transaction.
const maxBatch = 256

type issueOp struct {
	ctx     context.Context
	cert    *Certificate
	tokenID string
	now     time.Time
	err     error
	done    chan struct{}
}

// groupCommit batches concurrent issuances into one transaction without a
// background goroutine: the first caller to find no batch running becomes
// the leader and commits batches until the queue is empty; the others wait
// for their result.
type groupCommit struct {
	mu      sync.Mutex
	pending []*issueOp
	running bool
	// batches counts the batches committed or tried (benchmarks report
	// issuances per batch from it).
	batches atomic.Int64
}

func (g *groupCommit) submit(ctx context.Context, db *DB, op *issueOp) error {
	op.done = make(chan struct{})
	g.mu.Lock()
	g.pending = append(g.pending, op)
	if g.running {
		g.mu.Unlock()
		select {
		case <-op.done:
			return op.err
		case <-ctx.Done():
			// The write may still happen; the caller will not hear of it.
			return fmt.Errorf("record certificate %s: %w", op.cert.Serial, ctx.Err())
		}
	}
	g.running = true
	led := false
	// A leader that panics (net/http recovers a handler's panic) answers
	// the ops still queued with an error rather than leave them, and every
	// later issuance, waiting for a leader that is gone.
	defer func() {
		if led {
			return
		}
		g.mu.Lock()
		queued := g.pending
		g.pending, g.running = nil, false
		g.mu.Unlock()
		for _, q := range queued {
			q.err = fmt.Errorf("record certificate %s: the batch before it failed; retry", q.cert.Serial)
			close(q.done)
		}
	}()
	for {
		batch := g.pending
		if len(batch) > maxBatch {
			batch = batch[:maxBatch]
		}
		g.pending = g.pending[len(batch):]
		g.mu.Unlock()
		g.batches.Add(1)
		db.commitBatch(batch)
		g.mu.Lock()
		if len(g.pending) == 0 {
			g.running = false
			g.mu.Unlock()
			break
		}
	}
	led = true
	<-op.done
	return op.err
}

// commitBatch writes every op of batch in one transaction and reports each
// op's outcome once the commit is durable.
func (db *DB) commitBatch(batch []*issueOp) {
	defer func() {
		r := recover()
		for _, op := range batch {
			if r != nil && op.err == nil {
				// Never a success for what this batch may not have recorded.
				op.err = fmt.Errorf("record certificate %s: the store's batch failed (%v); retry", op.cert.Serial, r)
			}
			close(op.done)
		}
		if r != nil {
			panic(r)
		}
	}()
	// The batch outlives any one caller's cancellation. On SQLite its
	// statements run without a deadline (a context that can end costs the
	// driver a watcher goroutine and a wake-up per statement; their one
	// wait, for another process's write lock, is bounded by busy_timeout);
	// commitBatchTx bounds the transaction as a whole.
	ctx := context.Background()
	if db.kind == "postgres" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	var committed bool
	var err error
	if db.kind == "postgres" && !db.pooled {
		committed, err = db.commitBatchPG(ctx, batch)
	} else {
		committed, err = db.commitBatchTx(ctx, batch)
	}
	// Only a commit proves the write path healthy (see Health).
	if err != nil || committed {
		err = db.noteError(err)
		db.batchDone(err)
	}
	if err != nil {
		for _, op := range batch {
			if op.err == nil {
				op.err = fmt.Errorf("record certificate %s: %w", op.cert.Serial, err)
			}
		}
	}
}

// beginBatch starts a batch's transaction. The one wait busy_timeout does
// not bound is for the pool's single writer connection, which a stuck
// transaction could hold for ever: that wait gets a deadline. On PostgreSQL
// behind a pooler the whole transaction has it; on SQLite only the wait for
// the connection (busy_timeout, not the deadline, bounds the BEGIN
// IMMEDIATE's wait for another process's write lock, and once it is taken
// nothing in a batch waits for another lock), so that the transaction
// runs without a context that can end: one watched costs database/sql and
// the driver three goroutines and a progress handler per batch, a tenth of
// a batch's fixed cost. release gives the connection back after the
// transaction has ended.
func (db *DB) beginBatch(ctx context.Context) (tx *sql.Tx, release func(), err error) {
	tctx, cancel := context.WithTimeout(ctx, batchTxTimeout)
	if db.kind != "sqlite" {
		tx, err = db.begin(tctx)
		return tx, cancel, err
	}
	defer cancel()
	conn, err := db.writer.Conn(tctx)
	if err != nil {
		return nil, nil, err
	}
	if tx, err = conn.BeginTx(context.Background(), nil); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return tx, func() { conn.Close() }, nil
}

// commitBatchTx is commitBatch through database/sql: SQLite, or
// PostgreSQL behind a pooler. It sets the refused ops' errors and says
// whether it committed any; an error it returns fails the batch.
func (db *DB) commitBatchTx(ctx context.Context, batch []*issueOp) (committed bool, err error) {
	tx, release, err := db.beginBatch(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	defer tx.Rollback()
	// Ordered against revocations (PostgreSQL; see IssueCheck).
	if err := db.lockAgainstRevocation(ctx, tx); err != nil {
		return false, err
	}
	// The log's lock is taken last, by appendQueued once every op is
	// recorded: its holder waits for no other lock (token rows are locked
	// before it, on every replica), so replicas cannot deadlock, and it is
	// held for a fixed number of statements per batch.
	lb := &logBatch{}
	if db.kind == "sqlite" {
		if err := db.openLog(ctx, tx, lb); err != nil {
			return false, err
		}
	}
	// No savepoints: a refusal leaves the transaction as it found it
	// (recordIn), and a failure of the store fails the whole batch.
	ok := 0
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = fmt.Errorf("record certificate %s: %w", op.cert.Serial, err)
			continue
		}
		refused, err := db.recordIn(ctx, tx, lb, op.cert, op.tokenID, op.now)
		if err != nil {
			return false, err
		}
		if op.err = refused; refused == nil {
			ok++
		}
	}
	if ok == 0 {
		return false, nil
	}
	if db.kind == "postgres" {
		db.health.lockWait.Store(time.Now().UnixNano())
	}
	err = db.appendQueued(ctx, tx, lb)
	db.health.lockWait.Store(0)
	if err != nil {
		return false, err
	}
	// A SQLite file deleted or replaced under the CA would take this
	// commit and lose it: refuse instead.
	if db.file != nil {
		if err := db.Damaged(); err != nil {
			return false, err
		}
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	if db.kind == "sqlite" {
		db.keepEdge(lb)
	}
	return true, db.syncLog(ctx, lb)
}
