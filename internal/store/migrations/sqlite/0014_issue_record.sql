-- PostgreSQL stores a batch's certificates and log entries in a
-- server-side function (see postgres/0014_issue_record.sql); SQLite does it
-- in-process, with nothing to change here.
SELECT 1;
