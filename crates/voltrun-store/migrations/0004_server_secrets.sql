-- Secrets every node of a deployment must share, such as the JWT signing key, so that nodes
-- on one PostgreSQL database need no shared configuration: the first node to start inserts a
-- freshly generated value and every node reads the one that won. Stored as given (a later
-- migration may encrypt values under a master key).
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
