-- Dependency builds as durable work (SPEC §10, issue 15), and the function states they drive.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

-- `state`: pending (its first build runs) | active | failed (the first build failed).
-- `last_update_status`: in_progress | successful | failed, for the latest change.
-- Every function that existed before had no build: active, its last update successful.
ALTER TABLE functions ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE functions ADD COLUMN state_reason TEXT;
ALTER TABLE functions ADD COLUMN last_update_status TEXT NOT NULL DEFAULT 'successful';
ALTER TABLE functions ADD COLUMN last_update_status_reason TEXT;

-- One row per build. `status`: queued (waiting for a node) | building (claimed under a lease)
-- | success | failed. `definition` is the function (JSON) to apply when the build succeeds;
-- `base_version` the version it replaces (0 for a function's first build, which is already
-- stored). `package_sha256` is the blob of the definition's package (a blob a build still
-- needs is in use). `tree_key` names the built dependency tree in the cache; `tree_blob` the
-- blob it was packed into for other nodes (PostgreSQL: a node that lacks it fetches it).
-- A build goes with its function (ON DELETE CASCADE: deleting a function cancels its build).
CREATE TABLE builds (
    id               TEXT PRIMARY KEY,
    function_id      TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    user_id          TEXT NOT NULL,
    function_version BIGINT NOT NULL,
    base_version     BIGINT NOT NULL,
    status           TEXT NOT NULL,
    reason           TEXT,
    logs             TEXT NOT NULL,
    logs_truncated   BIGINT NOT NULL,
    cached           BIGINT NOT NULL,
    definition       TEXT NOT NULL,
    package_sha256   TEXT,
    tree_key         TEXT,
    tree_blob        TEXT,
    attempts         BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires    TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
-- The latest build of a function, and the queue (queued and building rows only).
CREATE INDEX builds_function ON builds(function_id, id);
CREATE INDEX builds_queue ON builds(status, id) WHERE status IN ('queued', 'building');
CREATE INDEX builds_package ON builds(package_sha256) WHERE package_sha256 IS NOT NULL;
CREATE INDEX builds_tree ON builds(tree_key) WHERE tree_blob IS NOT NULL;

-- The scheduler fires active functions only: its covering index gains `state` (0005's, else
-- unchanged), so its list and its change check still read the index alone.
DROP INDEX functions_scheduled;
CREATE INDEX functions_scheduled ON functions(schedule, updated_at, id, user_id, name, version, max_retries, state) WHERE schedule IS NOT NULL;
