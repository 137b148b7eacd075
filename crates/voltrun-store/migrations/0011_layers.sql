-- Layers (SPEC §10): immutable, numbered versions of a zip that functions mount under /opt.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.

-- One row per version. The zip itself is a blob (migrations/0008, by `sha256`: one copy
-- however many versions or users upload the same bytes, in the database so that every node
-- of a PostgreSQL cluster can unpack any layer); the row keeps what lists and the size checks
-- need without reading it. `size` is the zip's bytes
-- (it counts against the owner's code quota), `unpacked_size` what it takes on disk.
CREATE TABLE layers (
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    description   TEXT NOT NULL,
    size          BIGINT NOT NULL,
    unpacked_size BIGINT NOT NULL,
    file_count    BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (user_id, name, version)
);
CREATE INDEX layers_sha256 ON layers(sha256);

-- The last version number given out per (user, name): a deleted version's number is never
-- given again (as Lambda), so `name:3` always means the same bytes.
CREATE TABLE layer_names (
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    last_version BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);

-- The layers a function mounts, in order: a JSON list of "name:version" strings.
ALTER TABLE functions ADD COLUMN layers TEXT NOT NULL DEFAULT '[]';
