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
	consumed bool  // its token consumed by the batch's consumeAndCheck
	token    Token // read when its token was not consumed
	tokenErr error
	refused  error
}

// commitBatchPG is commitBatch on a direct PostgreSQL connection, in three
// round trips whatever the batch's size, each a pgx pipeline:
//
//  1. BEGIN, the shared revocation lock, and one statement that consumes
//     the batch's tokens and reads every issuance's checks
//     (consumeAndCheck);
//  2. for each refused issuance, its token given back, or read (to say
//     why it could not be consumed); then mutual_issue_record, which
//     stores the accepted certificates with their log indexes and appends
//     them to the log, and COMMIT: the only round trip under the log's
//     lock;
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
	ops, b := queueChecks(batch)
	if len(ops) == 0 {
		return false, nil
	}
	if err := pc.SendBatch(ctx, b).Close(); err != nil {
		return false, fmt.Errorf("check %d issuances and consume their tokens: %w", len(ops), err)
	}
	b, rec := db.queueOutcomes(ops)
	var placed []*int64
	if len(rec.serials) > 0 {
		b.Queue(recordQuery, rec.args()...).QueryRow(func(r pgx.Row) error { return r.Scan(&placed) })
	}
	b.Queue("COMMIT").Exec(func(t pgconn.CommandTag) error {
		committed = t.String() == "COMMIT"
		return nil
	})
	db.health.lockWait.Store(time.Now().UnixNano())
	err = pc.SendBatch(ctx, b).Close()
	db.health.lockWait.Store(0)
	if err != nil {
		return false, fmt.Errorf("store %d certificates, append them to the issuance log and commit: %w", len(rec.serials), err)
	}
	// A COMMIT of an aborted transaction answers ROLLBACK without an error.
	if !committed {
		return false, errors.New("the issuing transaction was rolled back instead of committed")
	}
	logged, err := rec.placed(placed)
	if err != nil {
		return false, err
	}
	for _, o := range ops {
		if o.tokenID != "" && !o.consumed {
			o.refused = tokenRefusal(o.tokenID, o.token, o.tokenErr)
		}
		o.err = o.refused
	}
	// mutual_issue_record committed asynchronously if it took the log's lock.
	if logged {
		if _, err := pc.Exec(ctx, syncLogQuery); err != nil {
			return true, fmt.Errorf("wait for the issuance log's commit to reach the disk (it may or may not have; retry): %w", err)
		}
	}
	return logged, nil
}

// consumeAndCheck consumes the join tokens of a batch (an issuance
// without one passes ”) and reads for each issuance what
// checkIssuanceQuery reads (see IssueCheck), in the batch's order, with
// whether its token was consumed (migration 0014).
const consumeAndCheck = "SELECT * FROM mutual_issue_check($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[])"

// queueChecks queues BEGIN, the shared revocation lock and
// consumeAndCheck for each live op of batch: the first pipeline.
func queueChecks(batch []*issueOp) ([]*pgOp, *pgx.Batch) {
	ops := make([]*pgOp, 0, len(batch))
	var tokens, serials, spiffeIDs, nodes, entries, presented []string
	var nows []int64
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = fmt.Errorf("record certificate %s: %w", op.cert.Serial, err)
			continue
		}
		ops = append(ops, &pgOp{issueOp: op})
		c := op.cert
		p := ""
		if c.Check != nil {
			p = c.Check.Presented
		}
		tokens, serials, nows = append(tokens, op.tokenID), append(serials, c.Serial), append(nows, toUS(op.now))
		spiffeIDs, nodes = append(spiffeIDs, c.SPIFFEID), append(nodes, c.NodeID)
		entries, presented = append(entries, c.EntryID), append(presented, p)
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SELECT pg_advisory_xact_lock_shared(7105294004)")
	b.Queue(consumeAndCheck, tokens, serials, nows, spiffeIDs, nodes, entries, presented).Query(func(rows pgx.Rows) error {
		return scanChecks(rows, ops)
	})
	return ops, b
}

// scanChecks reads consumeAndCheck's rows into ops, one each.
func scanChecks(rows pgx.Rows, ops []*pgOp) error {
	i := 0
	for rows.Next() {
		if i == len(ops) {
			return fmt.Errorf("consumeAndCheck: more rows than the %d issuances", len(ops))
		}
		o := ops[i]
		if err := rows.Scan(append([]any{&o.consumed}, o.check.dest()...)...); err != nil {
			return err
		}
		i++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if i != len(ops) {
		return fmt.Errorf("consumeAndCheck: %d rows for %d issuances", i, len(ops))
	}
	return nil
}

// recordQuery stores a batch's accepted certificates and appends them to
// the log (migration 0014).
const recordQuery = "SELECT mutual_issue_record($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::BYTEA[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BYTEA[], $12::TEXT[])"

// records are mutual_issue_record's arguments: the accepted ops'
// certificates, in order.
type records struct {
	ops                                                   []*pgOp
	serials, ids, requestedBy, nodes, parents, grants, tk []string
	notBefore, notAfter, issuedAt                         []int64
	ders, entries                                         [][]byte
}

func (r *records) add(o *pgOp) {
	c := o.cert
	r.ops = append(r.ops, o)
	r.serials, r.ids, r.requestedBy = append(r.serials, c.Serial), append(r.ids, c.SPIFFEID), append(r.requestedBy, c.RequestedBy)
	r.nodes, r.parents, r.grants = append(r.nodes, c.NodeID), append(r.parents, c.RenewedFrom), append(r.grants, c.EntryID)
	r.notBefore, r.notAfter, r.issuedAt = append(r.notBefore, toUS(c.NotBefore)), append(r.notAfter, toUS(c.NotAfter)), append(r.issuedAt, toUS(c.IssuedAt))
	r.ders, r.entries, r.tk = append(r.ders, c.DER), append(r.entries, c.LogEntry), append(r.tk, o.tokenID)
}

// placed notes where mutual_issue_record placed each certificate (idx):
// its log index, or ErrAlreadyExists when it did not store it. It says
// whether any had a log entry (then the commit was asynchronous).
func (r *records) placed(idx []*int64) (logged bool, err error) {
	if len(idx) != len(r.ops) {
		return false, fmt.Errorf("mutual_issue_record placed %d of %d certificates", len(idx), len(r.ops))
	}
	for i, o := range r.ops {
		logged = logged || o.cert.LogEntry != nil
		switch {
		case idx[i] == nil:
			o.refused = fmt.Errorf("certificate %s: %w", o.cert.Serial, ErrAlreadyExists)
		case *idx[i] >= 0:
			o.cert.LogIndex = *idx[i]
		}
	}
	return logged, nil
}

func (r *records) args() []any {
	return []any{r.serials, r.ids, r.notBefore, r.notAfter, r.issuedAt, r.ders, r.requestedBy, r.nodes, r.parents, r.grants, r.entries, r.tk}
}

// queueOutcomes judges each op on what the first pipeline read and starts
// the second: for each refused op, its token read (to say why it could not
// be consumed) or given back. The accepted ops are gathered in rec.
func (db *DB) queueOutcomes(ops []*pgOp) (*pgx.Batch, *records) {
	b := &pgx.Batch{}
	rec := &records{}
	for _, o := range ops {
		c := o.cert
		switch {
		case o.tokenID != "" && !o.consumed:
			b.Queue(db.q.rebind(selectToken), o.tokenID).QueryRow(func(r pgx.Row) error {
				// Reported by tokenRefusal, not as the batch's failure.
				o.token, o.tokenErr = scanToken(r)
				return nil
			})
		case c.Check != nil && o.check.refusal(c) != nil:
			o.refused = o.check.refusal(c)
			if o.consumed {
				b.Queue(db.q.rebind(unconsumeToken), o.tokenID, c.Serial)
			}
		default:
			rec.add(o)
		}
	}
	return b, rec
}
