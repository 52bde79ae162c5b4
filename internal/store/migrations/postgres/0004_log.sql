-- The issuance log: every certificate, in one order, as an RFC 6962 Merkle
-- tree (golang.org/x/mod/sumdb/tlog layout of stored hashes).
CREATE TABLE log_entries (
    idx  BIGINT PRIMARY KEY,
    data BYTEA NOT NULL
);
CREATE TABLE log_hashes (
    id   BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL
);
CREATE TABLE log_state (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL
);
INSERT INTO log_state (id, size) VALUES (1, 0);
CREATE TABLE log_checkpoints (
    size          BIGINT PRIMARY KEY,
    root_hash     BYTEA NOT NULL,
    note          TEXT NOT NULL,
    created_at_us BIGINT NOT NULL
);
ALTER TABLE certificates ADD COLUMN log_index BIGINT;
CREATE INDEX certificates_by_log_index ON certificates (log_index);
