-- The dashboard's "revoked" filter lists revoked certificates newest first:
-- a partial index in the list order holds only them, so a page of them is
-- read directly however rare they are among the rest.
CREATE INDEX certificates_revoked_by_issue_order ON certificates (issued_at_us, serial) WHERE revoked_at_us IS NOT NULL;
