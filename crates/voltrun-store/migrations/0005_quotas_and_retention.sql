-- Quotas and retention (docs/SECURITY.md, "Hardening: quotas and retention").
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

-- The size of each function's code, so a user's total is summed without reading any code
-- (the code-size quota) and lists can show it without carrying the code.
ALTER TABLE functions ADD COLUMN code_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE functions SET code_bytes = octet_length(code);

-- The scheduler's every read, answered from the index alone: on SQLite a row's columns after
-- `code` sit behind its overflow pages (up to 1 MiB each), which a plain index on `schedule`
-- still made every scan walk.
DROP INDEX functions_scheduled;
CREATE INDEX functions_scheduled ON functions(schedule, updated_at, id, user_id, name, version, max_retries) WHERE schedule IS NOT NULL;
