-- Versions and aliases (SPEC §13). Portable SQL: the same file runs on SQLite and PostgreSQL.

-- Single-file code, content-addressed: versions that did not change the code share one row.
CREATE TABLE version_code (
    sha256 TEXT PRIMARY KEY,
    code   TEXT NOT NULL
);

-- One immutable snapshot per version of a function. `definition` is the function as it ran
-- then (voltrun_core::Function as JSON, its code left out: `code_sha256` names it in
-- version_code); `package_sha256` its package blob (a blob a version holds is in use).
-- `state`: active | pending | failed (its dependency build). The dependency tree a version
-- runs with is its successful build's (builds: function_id, function_version).
CREATE TABLE function_versions (
    function_id    TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    definition     TEXT NOT NULL,
    code_sha256    TEXT NOT NULL,
    package_sha256 TEXT,
    state          TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (function_id, version)
);
CREATE INDEX function_versions_code ON function_versions(code_sha256);
CREATE INDEX function_versions_package ON function_versions(package_sha256) WHERE package_sha256 IS NOT NULL;

-- Aliases: a name for a version, with at most one weighted extra version (`extra_version`,
-- `extra_weight`, both NULL without a split). `route` is unique among aliases; functions.rs
-- and versions.rs keep it unique against functions' routes too.
CREATE TABLE aliases (
    function_id   TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    extra_version BIGINT,
    extra_weight  DOUBLE PRECISION,
    description   TEXT NOT NULL,
    route         TEXT UNIQUE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (function_id, name)
);

-- What a schedule runs: an alias or a version (NULL: the latest).
ALTER TABLE functions ADD COLUMN schedule_qualifier TEXT;
-- What a run was called by ("3", "live", "latest"; NULL: unqualified).
ALTER TABLE executions ADD COLUMN qualifier TEXT;

-- The scheduler's covering index gains the qualifier (0010's, else unchanged).
DROP INDEX functions_scheduled;
CREATE INDEX functions_scheduled ON functions(schedule, updated_at, id, user_id, name, version, max_retries, state, schedule_qualifier) WHERE schedule IS NOT NULL;

-- Every function that existed before gets its current definition as its one version: done
-- by the server at start (versions.rs: backfill), which can write the JSON.
