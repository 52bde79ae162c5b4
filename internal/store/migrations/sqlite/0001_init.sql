-- Join tokens: only the SHA-256 of the secret is kept.
CREATE TABLE tokens (
    id               TEXT PRIMARY KEY,
    secret_hash      BLOB NOT NULL,
    spiffe_id        TEXT NOT NULL,
    dns_names        TEXT NOT NULL,
    ip_addresses     TEXT NOT NULL,
    cert_ttl_us      INTEGER NOT NULL,
    created_at_us    INTEGER NOT NULL,
    expires_at_us    INTEGER NOT NULL,
    created_by       TEXT NOT NULL,
    used_at_us       INTEGER,
    used_serial      TEXT
);

-- Every certificate the CA issued.
CREATE TABLE certificates (
    serial            TEXT PRIMARY KEY,
    spiffe_id         TEXT NOT NULL,
    not_before_us     INTEGER NOT NULL,
    not_after_us      INTEGER NOT NULL,
    issued_at_us      INTEGER NOT NULL,
    der               BLOB NOT NULL,
    requested_by      TEXT NOT NULL,
    revoked_at_us     INTEGER,
    revocation_reason INTEGER
);
CREATE INDEX certificates_by_identity ON certificates (spiffe_id, not_after_us);
CREATE INDEX certificates_by_issue_time ON certificates (issued_at_us);
