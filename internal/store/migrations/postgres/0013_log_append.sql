-- The issuance log's append, server-side: one call sequences a batch of
-- entries (lock, size, hashes, writes) instead of a round trip for each
-- step, so the log's lock is held for that call and the commit only; and
-- that commit does not wait for the disk (see mutual_log_sync).
--
-- mutual_log_hash_index is golang.org/x/mod/sumdb/tlog's StoredHashIndex:
-- where the hash of level `level`, number n, is stored.
CREATE FUNCTION mutual_log_hash_index(level INT, n BIGINT) RETURNS BIGINT
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    i BIGINT := 0;
BEGIN
    FOR l IN 1..level LOOP
        n := 2 * n + 1;
    END LOOP;
    WHILE n > 0 LOOP
        i := i + n;
        n := n >> 1;
    END LOOP;
    RETURN i + level;
END
$$;

-- mutual_log_append appends entries, in order, to the log under its
-- advisory lock (held to the end of the transaction, so appends of every
-- replica form one order), stores each entry's tlog hashes (RFC 6962: a
-- leaf is SHA-256(0x00 || entry), a node SHA-256(0x01 || left || right)),
-- sets the log index of the certificate serials[i] to that of entries[i],
-- and returns the index of the first entry.
--
-- The transaction's commit is made asynchronous (synchronous_commit off for
-- it alone): it releases the log's lock as soon as its commit record is in
-- the WAL, not after the WAL's fsync, so that replicas do not queue behind
-- each other's disk flushes. Nothing may answer the issuances until
-- mutual_log_sync, called after the commit, has returned.
CREATE FUNCTION mutual_log_append(entries BYTEA[], serials TEXT[]) RETURNS BIGINT
LANGUAGE plpgsql AS $$
DECLARE
    first BIGINT;
    n BIGINT;
    base BIGINT;
    h BYTEA;
    sibling BYTEA;
    k INT;
    count INT := coalesce(array_length(entries, 1), 0);
BEGIN
    IF count <> coalesce(array_length(serials, 1), 0) THEN
        RAISE EXCEPTION 'mutual_log_append: % entries but % serials', count, coalesce(array_length(serials, 1), 0);
    END IF;
    PERFORM pg_advisory_xact_lock(7105294005);
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT size INTO STRICT first FROM log_state WHERE id = 1;
    n := first;
    FOR i IN 1..count LOOP
        base := mutual_log_hash_index(0, n);
        h := sha256('\x00'::BYTEA || entries[i]);
        INSERT INTO log_hashes (id, hash) VALUES (base, h);
        k := 0;
        -- Each trailing 1 bit of n completes a subtree with its left sibling.
        WHILE (n >> k) & 1 = 1 LOOP
            SELECT hash INTO STRICT sibling FROM log_hashes WHERE id = mutual_log_hash_index(k, (n >> k) - 1);
            h := sha256('\x01'::BYTEA || sibling || h);
            k := k + 1;
            INSERT INTO log_hashes (id, hash) VALUES (base + k, h);
        END LOOP;
        n := n + 1;
    END LOOP;
    INSERT INTO log_entries (idx, data)
        SELECT first + o - 1, e FROM unnest(entries) WITH ORDINALITY AS v(e, o);
    UPDATE certificates SET log_index = first + v.o - 1
        FROM unnest(serials) WITH ORDINALITY AS v(s, o) WHERE certificates.serial = v.s;
    GET DIAGNOSTICS k = ROW_COUNT;
    IF k <> count THEN
        RAISE EXCEPTION 'mutual_log_append: % of % certificates found to record their log index', k, count;
    END IF;
    UPDATE log_state SET size = n WHERE id = 1;
    RETURN first;
END
$$;

-- mutual_log_sync returns once everything committed before it is on disk:
-- it commits a write of its own (a row inserted and deleted, in a table no
-- one else writes, so it waits for no lock) under the session's own
-- synchronous_commit (on, or what the operator chose, such as a standby's
-- remote_apply), which flushes the WAL up to its commit record, after every
-- earlier one.
-- Called, in a transaction of its own, after a commit of mutual_log_append
-- and before the issuances are answered. A crash before it returns loses
-- at most a suffix of the log that no one was answered for: every later
-- append's commit record, and so its own flush, comes after.
CREATE TABLE log_sync (n BIGINT);
CREATE FUNCTION mutual_log_sync() RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    row TID;
BEGIN
    INSERT INTO log_sync (n) VALUES (0) RETURNING ctid INTO row;
    DELETE FROM log_sync WHERE ctid = row;
END
$$;
