-- Registration entries: which identity workloads on which nodes get.
CREATE TABLE entries (
    id            TEXT PRIMARY KEY,
    spiffe_id     TEXT NOT NULL,
    nodes         TEXT NOT NULL,
    selectors     TEXT NOT NULL,
    cert_ttl_us   INTEGER NOT NULL,
    dns_names     TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);

-- Roles granted by a join token; the node a certificate was obtained through.
ALTER TABLE tokens ADD COLUMN roles TEXT NOT NULL DEFAULT '[]';
ALTER TABLE certificates ADD COLUMN node_id TEXT;
CREATE INDEX certificates_by_node ON certificates (node_id);
