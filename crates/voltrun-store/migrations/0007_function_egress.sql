-- Network egress (SPEC §11): each function's allow-list, canonical entries as a JSON list of
-- strings. '[]' (the default, and every function that existed before) means no network.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

ALTER TABLE functions ADD COLUMN egress TEXT NOT NULL DEFAULT '[]';
