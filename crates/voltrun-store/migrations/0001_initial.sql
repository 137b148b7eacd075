-- VoltRun schema v1. Timestamps are RFC 3339 UTC text; ids are time-ordered text (voltrun_core::id),
-- so ORDER BY id is creation order and ids serve as keyset-pagination cursors.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family     TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT
);
CREATE INDEX api_keys_user ON api_keys(user_id, id);

CREATE TABLE functions (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    runtime     TEXT NOT NULL,
    code        TEXT NOT NULL,
    handler     TEXT NOT NULL,
    memory      BIGINT NOT NULL,
    timeout     BIGINT NOT NULL,
    env         TEXT NOT NULL,
    route       TEXT UNIQUE,
    public      BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (user_id, name)
);
CREATE INDEX functions_user ON functions(user_id, id);

CREATE TABLE executions (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    function_id      TEXT NOT NULL,
    function_name    TEXT NOT NULL,
    function_version BIGINT NOT NULL,
    status           TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    input            TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    logs             TEXT NOT NULL,
    logs_truncated   BIGINT NOT NULL,
    duration_ms      DOUBLE PRECISION,
    attempts         BIGINT NOT NULL,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
CREATE INDEX executions_user ON executions(user_id, id);
CREATE INDEX executions_user_function ON executions(user_id, function_id, id);
CREATE INDEX executions_user_status ON executions(user_id, status, id);
CREATE INDEX executions_status ON executions(status, id);
