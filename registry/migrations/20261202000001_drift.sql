-- Drift monitoring: the judgment state of each (endpoint, version) the drift monitor watches,
-- so that a restart neither raises an open incident again nor forgets it, and several registry
-- replicas judge each window once. A row changes in the same transaction as the
-- drift.detected / drift.recovered event it causes (transactional outbox).
-- Same shared subset of SQL as the other migrations: it runs on SQLite and PostgreSQL alike.

CREATE TABLE endpoint_drift (
    -- a deleted endpoint takes its monitoring state with it
    endpoint       TEXT NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    -- judged windows in a row whose score was above the threshold
    consecutive    BIGINT NOT NULL,
    -- id of the drift.detected event of the open incident; NULL when none is open
    incident_event BIGINT,
    -- end of the last judged window (RFC 3339, UTC, milliseconds, like every timestamp here)
    window_end     TEXT,
    -- the policy metric's score and the live samples in that window, for people reading the row
    last_score     DOUBLE PRECISION,
    last_samples   BIGINT,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (endpoint, version)
);
