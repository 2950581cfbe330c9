-- Endpoints (the traffic policy serving follows) and the counters serving replicas report.
-- Same shared subset of SQL as the first migration: it runs on SQLite and PostgreSQL alike.

CREATE TABLE endpoints (
    name       TEXT PRIMARY KEY,
    -- id of the event that created the endpoint: a creation order for newest-first paging
    seq        BIGINT NOT NULL UNIQUE,
    model      TEXT NOT NULL REFERENCES models (name),
    -- bumped by every change; the ETag of the endpoint
    revision   BIGINT NOT NULL,
    -- the validated EndpointPolicy, as JSON
    policy     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- The versions each endpoint's current policy routes to, kept in step with `endpoints.policy`
-- in the same transaction: archiving a version checks it, and the foreign key makes a dangling
-- reference impossible.
CREATE TABLE endpoint_versions (
    endpoint TEXT NOT NULL REFERENCES endpoints (name),
    model    TEXT NOT NULL,
    version  BIGINT NOT NULL,
    -- stable, canary or shadow
    role     TEXT NOT NULL,
    PRIMARY KEY (endpoint, version),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version)
);
CREATE INDEX endpoint_versions_by_version ON endpoint_versions (model, version);

-- Counters pushed by serving replicas, one row per report. A random (uuid) key instead of an
-- auto-increment one: the two engines spell those differently, and nothing needs the order of
-- insertion beyond `received_at`.
CREATE TABLE endpoint_reports (
    id          TEXT PRIMARY KEY,
    endpoint    TEXT NOT NULL,
    replica     TEXT NOT NULL,
    received_at TEXT NOT NULL,
    -- the validated analysis::Report, as JSON
    report      TEXT NOT NULL
);
CREATE INDEX endpoint_reports_by_endpoint_time ON endpoint_reports (endpoint, received_at);
-- pruning deletes by age across endpoints
CREATE INDEX endpoint_reports_by_time ON endpoint_reports (received_at);

-- The last load error each replica reported, so that `endpoint.degraded` / `endpoint.recovered`
-- are emitted once per change rather than once per report.
CREATE TABLE endpoint_replicas (
    endpoint       TEXT NOT NULL,
    replica        TEXT NOT NULL,
    load_error     TEXT,
    last_report_at TEXT NOT NULL,
    PRIMARY KEY (endpoint, replica)
);
