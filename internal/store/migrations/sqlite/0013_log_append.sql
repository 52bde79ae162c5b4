-- PostgreSQL appends to the issuance log in a server-side function (see
-- postgres/0010_log_append.sql); SQLite appends in-process, with nothing
-- to change here.
SELECT 1;
