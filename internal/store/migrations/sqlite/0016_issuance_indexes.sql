-- Every issuance writes its certificate's row and one entry in each index
-- of certificates that holds it. Indexes that no query reads, or whose
-- rows an issuance never needs, are dropped or narrowed to the rows that
-- are looked up (an enrollment has no node, no parent and is not revoked),
-- so that an enrollment writes its row and 4 index entries, not 8:
--
-- certificates_by_log_index: no query looks a certificate up by its log
-- index (the log is read from log_entries); dropped.
DROP INDEX certificates_by_log_index;
-- certificates_by_node, certificates_by_parent: RevokeNode looks up
-- node_id = ?, RevokeLineage renewed_from = the parent's serial; each
-- equality implies IS NOT NULL, so the partial index serves it, and holds
-- only workload certificates and renewals.
DROP INDEX certificates_by_node;
CREATE INDEX certificates_by_node ON certificates (node_id) WHERE node_id IS NOT NULL;
DROP INDEX certificates_by_parent;
CREATE INDEX certificates_by_parent ON certificates (renewed_from) WHERE renewed_from IS NOT NULL;
-- certificates_revoked held every certificate (NULL revocation times
-- first), for the CRL and the recent revocations (revoked rows, in
-- revocation order) and the summary's walk of live certificates (the NULL
-- range, covering). It now holds revoked rows only, in exactly their
-- order (revocation time, serial) with the expiry to filter on; the live
-- rows' summary reads certificates_live_by_expiry_day, which holds them
-- already and now carries their identity too (and revoked_at_us, always
-- NULL there, without which SQLite reads each row from the table to test
-- the index's own condition; the expiring page's days are then read from
-- the index alone too).
DROP INDEX certificates_revoked;
CREATE INDEX certificates_revoked ON certificates (revoked_at_us, serial, not_after_us) WHERE revoked_at_us IS NOT NULL;
DROP INDEX certificates_live_by_expiry_day;
CREATE INDEX certificates_live_by_expiry_day ON certificates ((not_after_us / 86400000000), issued_at_us, serial, not_after_us, spiffe_id, revoked_at_us)
    WHERE revoked_at_us IS NULL;
