package store

import (
	"database/sql"
	"sync/atomic"
)

// SQLite's write-ahead log is folded back into the database file by a
// connection of its own, in the background, so that no issuance waits for
// it: SQLite's automatic checkpoint runs inside the commit that crosses
// its threshold (1,000 pages: every few dozen issuances, each of which
// dirties a dozen pages), adding those pages' writes and two fsyncs to
// that one answer. The writer keeps an automatic threshold far above, as
// a bound on the log should the background fall behind. Durability does
// not change: each commit is on disk in the log (synchronous=FULL) before
// it returns, checkpointed or not.
const (
	// checkpointEvery is how many certificates committed start a
	// background checkpoint.
	checkpointEvery = 64
	// writerAutoCheckpoint is the writer's own threshold, in pages.
	writerAutoCheckpoint = 20000
)

// walCheckpointer runs PASSIVE checkpoints on its connection when kicked.
type walCheckpointer struct {
	conn    *sql.DB
	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	pending atomic.Int64 // certificates committed since the last kick
}

// startCheckpointer opens a connection on dsn and checkpoints from it
// until close.
func startCheckpointer(dsn string) (*walCheckpointer, error) {
	conn, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	conn.SetMaxOpenConns(1)
	c := &walCheckpointer{conn: conn, kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	go c.run()
	return c, nil
}

func (c *walCheckpointer) run() {
	defer close(c.stopped)
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		// A checkpoint that cannot finish (a reader on an old snapshot)
		// only leaves more for the next one; the writer's threshold
		// bounds the log meanwhile.
		_, _ = c.conn.Exec("PRAGMA wal_checkpoint(PASSIVE)")
	}
}

// committed notes n certificates committed, and starts a checkpoint every
// checkpointEvery of them.
func (c *walCheckpointer) committed(n int) {
	if c.pending.Add(int64(n)) < checkpointEvery {
		return
	}
	c.pending.Store(0)
	select {
	case c.kick <- struct{}{}:
	default: // one is already due
	}
}

// close stops the checkpoints, waiting for one under way.
func (c *walCheckpointer) close() error {
	close(c.stop)
	<-c.stopped
	return c.conn.Close()
}
