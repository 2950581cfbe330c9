-- Ferry registry schema. Written in the subset of SQL that SQLite and PostgreSQL share, so one
-- set of migrations serves both engines.

-- Monotonic counters. Every write transaction starts by locking the `events` row, which
-- serializes writers: event ids are handed out in commit order, so a consumer that reads
-- `id > last_seen` can never miss an event that commits late with a smaller id.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('events', 0);

CREATE TABLE models (
    name           TEXT PRIMARY KEY,
    -- id of the model.created event: a creation order for newest-first paging
    seq            BIGINT NOT NULL UNIQUE,
    description    TEXT,
    -- highest version number handed out; versions are numbered without gaps
    latest_version BIGINT NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE model_versions (
    model           TEXT NOT NULL REFERENCES models (name),
    version         BIGINT NOT NULL,
    sha256          TEXT NOT NULL,
    size            BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'active',
    signature       TEXT NOT NULL,
    lineage         TEXT NOT NULL,
    params          TEXT NOT NULL,
    metrics         TEXT NOT NULL,
    tags            TEXT NOT NULL,
    description     TEXT,
    profile         TEXT,
    idempotency_key TEXT,
    -- sha256 of the bytes and the canonical metadata: a retried key must match it
    idempotency_fp  TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (model, version),
    UNIQUE (model, idempotency_key)
);
CREATE INDEX model_versions_by_sha256 ON model_versions (sha256);

CREATE TABLE aliases (
    model      TEXT NOT NULL,
    alias      TEXT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);

-- The transactional outbox: written in the same transaction as the change it describes.
CREATE TABLE events (
    id         BIGINT PRIMARY KEY,
    type       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
