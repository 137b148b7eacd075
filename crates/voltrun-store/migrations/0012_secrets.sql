-- Secrets (SPEC §12, issue 16): each user's named values, sealed under the master key
-- (vault.rs: XChaCha20-Poly1305, the owner and the name bound in as associated data). `value`
-- is the envelope, never the plaintext. `revision` changes on every write, so an instance
-- started with an older value can tell (the engine compares revisions before reusing one).
-- A function names the secrets it gets in `functions.secrets`, a JSON list of names.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

CREATE TABLE secrets (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    revision   TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);

ALTER TABLE functions ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]';
