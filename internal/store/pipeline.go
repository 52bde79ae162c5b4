package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// pgOp is what the pipeline learnt of one issuance.
type pgOp struct {
	*issueOp
	check    checkRow
	consumed int64 // rows consumeToken changed
	inserted int64 // rows insertCertificateOnce inserted
	token    Token // read when consumed is 0
	tokenErr error
	refused  error
}

// commitBatchPG is commitBatch on a direct PostgreSQL connection, in three
// round trips whatever the batch's size, each a pgx pipeline:
//
//  1. BEGIN, the shared revocation lock, and for each issuance its checks
//     and writes (consume the token, insert the certificate), made
//     optimistically: refusals change no row or are undone below;
//  2. for each refused issuance, what it changed undone (and its token
//     read, to say why), then mutual_log_append and COMMIT: the only round
//     trip under the log's lock;
//  3. mutual_log_sync, after which the answers may leave.
//
// Savepoints are not needed: no refusal raises an error, and one that
// wrote undoes its writes in the same transaction.
func (db *DB) commitBatchPG(ctx context.Context, batch []*issueOp) (committed bool, err error) {
	conn, err := db.writer.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: PostgreSQL connection of type %T, want pgx's", dc)
		}
		pc := sc.Conn()
		var err error
		committed, err = db.pipelineBatch(ctx, pc, batch)
		if err != nil && !pc.IsClosed() && pc.PgConn().TxStatus() != 'I' {
			// Leave the connection as the pool expects it: idle.
			if _, rerr := pc.Exec(ctx, "ROLLBACK"); rerr != nil {
				pc.Close(ctx)
			}
		}
		return err
	})
	return committed, err
}

func (db *DB) pipelineBatch(ctx context.Context, pc *pgx.Conn, batch []*issueOp) (committed bool, err error) {
	ops, b := db.queueRecords(batch)
	if len(ops) == 0 {
		return false, nil
	}
	if err := pc.SendBatch(ctx, b).Close(); err != nil {
		return false, fmt.Errorf("record %d certificates: %w", len(ops), err)
	}
	b, lb := db.queueOutcomes(ops)
	var first int64
	if len(lb.queued) > 0 {
		entries, serials := lb.args()
		b.Queue(appendLogBatch, entries, serials).QueryRow(func(r pgx.Row) error { return r.Scan(&first) })
	}
	b.Queue("COMMIT").Exec(func(t pgconn.CommandTag) error {
		committed = t.String() == "COMMIT"
		return nil
	})
	db.health.lockWait.Store(time.Now().UnixNano())
	err = pc.SendBatch(ctx, b).Close()
	db.health.lockWait.Store(0)
	if err != nil {
		return false, fmt.Errorf("append %d certificates to the issuance log and commit: %w", len(lb.queued), err)
	}
	// A COMMIT of an aborted transaction answers ROLLBACK without an error.
	if !committed {
		return false, errors.New("the issuing transaction was rolled back instead of committed")
	}
	for _, o := range ops {
		if o.tokenID != "" && o.consumed != 1 {
			o.refused = tokenRefusal(o.tokenID, o.token, o.tokenErr)
		}
		o.err = o.refused
	}
	lb.placed(first)
	if len(lb.queued) > 0 {
		if _, err := pc.Exec(ctx, syncLogQuery); err != nil {
			return true, fmt.Errorf("wait for the issuance log's commit to reach the disk (it may or may not have; retry): %w", err)
		}
	}
	return len(lb.queued) > 0, nil
}

// queueRecords queues BEGIN, the shared revocation lock and each live op's
// checks, token consumption and certificate insert: the first pipeline.
// The insert claims the serial before the log's lock (a concurrent insert
// of the same one, such as two replicas importing a certificate at start,
// waits for this transaction and then changes no row).
func (db *DB) queueRecords(batch []*issueOp) ([]*pgOp, *pgx.Batch) {
	ops := make([]*pgOp, 0, len(batch))
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SELECT pg_advisory_xact_lock_shared(7105294004)")
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = fmt.Errorf("record certificate %s: %w", op.cert.Serial, err)
			continue
		}
		o := &pgOp{issueOp: op}
		ops = append(ops, o)
		c := op.cert
		if c.Check != nil {
			b.Queue(db.q.rebind(checkIssuanceQuery), checkArgs(c)...).QueryRow(func(r pgx.Row) error { return r.Scan(o.check.dest()...) })
		}
		if op.tokenID != "" {
			b.Queue(db.q.rebind(consumeToken), toUS(op.now), c.Serial, op.tokenID, toUS(op.now)).Exec(func(t pgconn.CommandTag) error {
				o.consumed = t.RowsAffected()
				return nil
			})
		}
		b.Queue(db.q.rebind(insertCertificateOnce),
			c.Serial, c.SPIFFEID, toUS(c.NotBefore), toUS(c.NotAfter), toUS(c.IssuedAt), c.DER, c.RequestedBy,
			nullString(c.NodeID), nullString(c.RenewedFrom), nullString(c.EntryID)).Exec(func(t pgconn.CommandTag) error {
			o.inserted = t.RowsAffected()
			return nil
		})
	}
	return ops, b
}

// queueOutcomes judges each op on what the first pipeline read and starts
// the second: for each refused op, its token read (to say why it could not
// be consumed) or given back, and its certificate deleted if inserted. The
// accepted ops' logged certificates are queued in lb.
func (db *DB) queueOutcomes(ops []*pgOp) (*pgx.Batch, *logBatch) {
	b := &pgx.Batch{}
	lb := &logBatch{}
	for _, o := range ops {
		c := o.cert
		switch {
		case o.tokenID != "" && o.consumed != 1:
			b.Queue(db.q.rebind(selectToken), o.tokenID).QueryRow(func(r pgx.Row) error {
				// Reported by tokenRefusal, not as the batch's failure.
				o.token, o.tokenErr = scanToken(r)
				return nil
			})
		case c.Check != nil && o.check.refusal(c) != nil:
			o.refused = o.check.refusal(c)
		case o.inserted != 1:
			o.refused = fmt.Errorf("certificate %s: %w", c.Serial, ErrAlreadyExists)
		default:
			if c.LogEntry != nil {
				lb.queue(c)
			}
			continue
		}
		if o.consumed == 1 {
			b.Queue(db.q.rebind(unconsumeToken), o.tokenID, c.Serial)
		}
		if o.inserted == 1 {
			b.Queue(db.q.rebind(deleteCertificate), c.Serial)
		}
	}
	return b, lb
}
