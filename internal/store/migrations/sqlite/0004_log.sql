-- The issuance log: every certificate, in one order, as an RFC 6962 Merkle
-- tree (golang.org/x/mod/sumdb/tlog layout of stored hashes).
CREATE TABLE log_entries (
    idx  INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE log_hashes (
    id   INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
CREATE TABLE log_state (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL
);
INSERT INTO log_state (id, size) VALUES (1, 0);
CREATE TABLE log_checkpoints (
    size          INTEGER PRIMARY KEY,
    root_hash     BLOB NOT NULL,
    note          TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
ALTER TABLE certificates ADD COLUMN log_index INTEGER;
CREATE INDEX certificates_by_log_index ON certificates (log_index);
