-- The dashboard's "revoked" filter lists revoked certificates newest first:
-- a partial index in the list order holds only them, so a page of them is
-- read directly however rare they are among the rest.
CREATE INDEX certificates_revoked_by_issue_order ON certificates (issued_at_us, serial) WHERE revoked_at_us IS NOT NULL;

-- What the issuance log's monitor reported (POST /v1/log/findings): one row
-- per thing it flagged, however often it was reported again.
CREATE TABLE log_findings (
    rule              TEXT NOT NULL,
    log_index         BIGINT NOT NULL,
    spiffe_id         TEXT NOT NULL,
    serial            TEXT NOT NULL,
    detail            TEXT NOT NULL,
    reported_by       TEXT NOT NULL,
    first_reported_us BIGINT NOT NULL,
    last_reported_us  BIGINT NOT NULL,
    times             BIGINT NOT NULL,
    PRIMARY KEY (rule, log_index, spiffe_id, serial)
);
CREATE INDEX log_findings_by_last_report ON log_findings (last_reported_us);

-- The CA's summary (the dashboard's overview, identities and nodes pages)
-- reads every live certificate's identity, issue time and serial: the
-- revocation index, widened to carry them, answers it from the index alone
-- instead of a lookup of each row (and its certificate) in the table. It
-- serves the CRL's query as before.
DROP INDEX certificates_revoked;
CREATE INDEX certificates_revoked ON certificates (revoked_at_us, not_after_us, spiffe_id, issued_at_us, serial);
