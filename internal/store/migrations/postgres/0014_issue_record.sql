-- A batch of issuances' certificates stored and appended to the issuance
-- log in one call, each certificate written once, with its log index (the
-- certificate was stored first, then updated with its index: a second
-- version of a wide row and of each of its eight index entries). Ordered
-- like mutual_log_append (0013), whose tree it builds the same way, and
-- which the transactions through a pooler still use.
--
-- mutual_issue_record stores, in order, each certificate whose serial is
-- not taken yet; one with an entry gets the log's next index, and its
-- entry and tlog hashes (RFC 6962) are stored. A certificate whose serial
-- is taken is not stored and gives back the join token token_ids[i] ('' for
-- none) that its issuance consumed. It returns, for each certificate, its
-- log index, -1 when stored without an entry, or NULL when not stored.
-- '' in node_ids, renewed_from or entry_ids stands for NULL.
--
-- The log's lock is taken, and the commit made asynchronous (see
-- mutual_log_append and mutual_log_sync), only when some certificate has
-- an entry. The certificates are inserted under that lock only: no other
-- logged insert is then under way, so the lock's holder waits for no row.
-- (Through a pooler, transactions still insert before the lock; such a
-- replica and a direct one recording the same serial at once, as when both
-- import their own certificates at start, may deadlock, which PostgreSQL
-- ends by failing one of them.)
CREATE FUNCTION mutual_issue_record(serials TEXT[], spiffe_ids TEXT[], not_before BIGINT[], not_after BIGINT[],
    issued_at BIGINT[], ders BYTEA[], requested_by TEXT[], node_ids TEXT[], renewed_from TEXT[], entry_ids TEXT[],
    entries BYTEA[], token_ids TEXT[]) RETURNS BIGINT[]
LANGUAGE plpgsql AS $$
DECLARE
    count INT := coalesce(array_length(serials, 1), 0);
    result BIGINT[] := array_fill(NULL::BIGINT, ARRAY[count]);
    logged BOOLEAN := EXISTS (SELECT 1 FROM unnest(entries) e WHERE e IS NOT NULL);
    first BIGINT;
    n BIGINT;
    base BIGINT;
    h BYTEA;
    k INT;
    edge BYTEA[] := '{}'; -- edge[k+1]: the complete subtree of level k at the log's right edge
    hash_ids BIGINT[] := '{}';
    hashes BYTEA[] := '{}';
    idxs BIGINT[] := '{}';
    datas BYTEA[] := '{}';
BEGIN
    IF count <> coalesce(array_length(entries, 1), 0) OR count <> coalesce(array_length(token_ids, 1), 0) THEN
        RAISE EXCEPTION 'mutual_issue_record: % certificates, % entries, % tokens', count,
            coalesce(array_length(entries, 1), 0), coalesce(array_length(token_ids, 1), 0);
    END IF;
    IF logged THEN
        PERFORM pg_advisory_xact_lock(7105294005);
        PERFORM set_config('synchronous_commit', 'off', true);
        SELECT size INTO STRICT first FROM log_state WHERE id = 1;
        k := 0;
        WHILE first >> k > 0 LOOP
            IF (first >> k) & 1 = 1 THEN
                SELECT hash INTO STRICT h FROM log_hashes WHERE id = mutual_log_hash_index(k, (first >> k) - 1);
                edge[k + 1] := h;
            END IF;
            k := k + 1;
        END LOOP;
        n := first;
    END IF;
    FOR i IN 1..count LOOP
        INSERT INTO certificates (serial, spiffe_id, not_before_us, not_after_us, issued_at_us, der, requested_by,
            node_id, renewed_from, entry_id, log_index)
        VALUES (serials[i], spiffe_ids[i], not_before[i], not_after[i], issued_at[i], ders[i], requested_by[i],
            NULLIF(node_ids[i], ''), NULLIF(renewed_from[i], ''), NULLIF(entry_ids[i], ''),
            CASE WHEN entries[i] IS NULL THEN NULL ELSE n END)
        ON CONFLICT (serial) DO NOTHING;
        IF NOT FOUND THEN
            IF token_ids[i] <> '' THEN
                UPDATE tokens SET used_at_us = NULL, used_serial = NULL WHERE id = token_ids[i] AND used_serial = serials[i];
            END IF;
            CONTINUE;
        END IF;
        IF entries[i] IS NULL THEN
            result[i] := -1;
            CONTINUE;
        END IF;
        result[i] := n;
        idxs[cardinality(idxs) + 1] := n;
        datas[cardinality(datas) + 1] := entries[i];
        base := mutual_log_hash_index(0, n);
        h := sha256('\x00'::BYTEA || entries[i]);
        hash_ids[cardinality(hash_ids) + 1] := base;
        hashes[cardinality(hashes) + 1] := h;
        k := 0;
        -- Each trailing 1 bit of n completes a subtree with its left sibling.
        WHILE (n >> k) & 1 = 1 LOOP
            h := sha256('\x01'::BYTEA || edge[k + 1] || h);
            k := k + 1;
            hash_ids[cardinality(hash_ids) + 1] := base + k;
            hashes[cardinality(hashes) + 1] := h;
        END LOOP;
        edge[k + 1] := h;
        n := n + 1;
    END LOOP;
    IF logged AND n > first THEN
        INSERT INTO log_hashes (id, hash) SELECT * FROM unnest(hash_ids, hashes);
        INSERT INTO log_entries (idx, data) SELECT * FROM unnest(idxs, datas);
        UPDATE log_state SET size = n WHERE id = 1;
    END IF;
    RETURN result;
END
$$;

-- mutual_issue_check consumes, in order, the join token token_ids[i] of each
-- issuance of a batch ('' for none) if it is still usable at nows[i]
-- (marking it used by serials[i]), and reads what IssueCheck needs of it:
-- one row per issuance, in order, saying whether its token was consumed
-- (by it: two issuances of a batch may present the same token). Each
-- lookup is a statement of its own by primary key, as when they were sent
-- one by one, so that no plan made while a table was small (a join that
-- reads all of it) outlives its growth. Called after the shared
-- revocation lock, in the issuing transaction.
CREATE FUNCTION mutual_issue_check(token_ids TEXT[], serials TEXT[], nows BIGINT[], spiffe_ids TEXT[], node_ids TEXT[],
    entry_ids TEXT[], presented TEXT[])
RETURNS TABLE (consumed BOOLEAN, id_rev BIGINT, node_rev BIGINT, p_serial TEXT, p_spiffe_id TEXT, p_issued BIGINT,
    p_revoked BIGINT, p_id_rev BIGINT, p_node_rev BIGINT, entry_id TEXT, entry_for TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    p RECORD;
BEGIN
    -- Token rows are locked in one order on every replica first: a caller
    -- sending two tokens to two replicas in opposite orders would otherwise
    -- deadlock them, and the aborted batch fails every issuance in it.
    PERFORM 1 FROM tokens WHERE id = ANY(token_ids) ORDER BY id FOR UPDATE;
    FOR i IN 1..coalesce(array_length(serials, 1), 0) LOOP
        consumed := false;
        IF token_ids[i] <> '' THEN
            UPDATE tokens SET used_at_us = nows[i], used_serial = serials[i]
                WHERE id = token_ids[i] AND used_at_us IS NULL AND expires_at_us > nows[i];
            consumed := FOUND;
        END IF;
        id_rev := (SELECT MAX(r.revoked_at_us) FROM revoked_identities r WHERE r.spiffe_id = spiffe_ids[i]);
        node_rev := (SELECT MAX(r.revoked_at_us) FROM revoked_nodes r WHERE r.node_id = spiffe_ids[i] OR r.node_id = NULLIF(node_ids[i], ''));
        p_serial := NULL; p_spiffe_id := NULL; p_issued := NULL; p_revoked := NULL; p_id_rev := NULL; p_node_rev := NULL;
        IF presented[i] <> '' THEN
            SELECT c.serial, c.spiffe_id, c.issued_at_us, c.revoked_at_us, c.node_id INTO p
                FROM certificates c WHERE c.serial = presented[i];
            IF FOUND THEN
                p_serial := p.serial; p_spiffe_id := p.spiffe_id; p_issued := p.issued_at_us; p_revoked := p.revoked_at_us;
                p_id_rev := (SELECT MAX(r.revoked_at_us) FROM revoked_identities r WHERE r.spiffe_id = p.spiffe_id);
                p_node_rev := (SELECT MAX(r.revoked_at_us) FROM revoked_nodes r WHERE r.node_id = p.spiffe_id OR r.node_id = p.node_id);
            END IF;
        END IF;
        entry_id := NULL; entry_for := NULL;
        IF entry_ids[i] <> '' THEN
            SELECT e.id, e.spiffe_id INTO entry_id, entry_for FROM entries e WHERE e.id = entry_ids[i];
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
