-- Certificate list pages are read newest first by (issued_at_us, serial),
-- the cursor's order: an index in exactly that order answers a page, the
-- first or the ten-thousandth, by reading its rows and nothing else (the
-- index on issued_at_us alone made SQLite sort every group of equal times).
-- It replaces that index, which it covers, so an issuance writes no more.
CREATE INDEX certificates_by_issue_order ON certificates (issued_at_us, serial);
DROP INDEX certificates_by_issue_time;
