-- Packages (SPEC §10): content-addressed blobs (a function's package zip; the dependency
-- trees and layers of issue 15 too), stored in chunks of at most 4 MiB so that neither
-- SQLite nor PostgreSQL holds a 50 MiB value in one row or one allocation.
-- Portable SQL: the same file runs on SQLite and PostgreSQL (SQLite stores a BYTEA column's
-- blobs as blobs: the declared type only sets its affinity).

CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE blob_chunks (
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, seq)
);

-- A function's package: the blob holding its zip, and what the API serves of it
-- (voltrun_core::PackageInfo as JSON). NULL for a `code` function.
ALTER TABLE functions ADD COLUMN package_sha256 TEXT;
ALTER TABLE functions ADD COLUMN package TEXT;
CREATE INDEX functions_package ON functions(package_sha256) WHERE package_sha256 IS NOT NULL;
