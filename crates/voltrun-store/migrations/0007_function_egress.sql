-- A function's network egress allow-list (SPEC §11, issue 14): a JSON array of canonical
-- entries; '[]' (every existing function) is no network at all.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

ALTER TABLE functions ADD COLUMN egress TEXT NOT NULL DEFAULT '[]';
