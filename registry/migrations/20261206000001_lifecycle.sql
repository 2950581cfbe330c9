-- The lifecycle monitor: per endpoint, one row per kind of incident it watches ('stale': the
-- stable version is older than the policy's maximum age; 'decay': its accuracy or mean reward
-- dropped from its reference), about the endpoint's stable version. A row changes in the same
-- transaction as the event that opens or closes its incident (transactional outbox), so a
-- restart neither raises an open incident again nor forgets it, and several registry replicas
-- raise each incident once.
-- Same shared subset of SQL as the other migrations: it runs on SQLite and PostgreSQL alike.

CREATE TABLE endpoint_lifecycle (
    -- a deleted endpoint takes its state with it
    endpoint         TEXT NOT NULL REFERENCES endpoints (name) ON DELETE CASCADE,
    -- 'stale' or 'decay'
    kind             TEXT NOT NULL,
    -- the stable version the row is about
    version          BIGINT NOT NULL,
    -- id of the event that opened the incident; NULL when none is open
    incident_event   BIGINT,
    -- decay: the value windows are compared with, and where it came from (policy, lineage,
    -- first_window); a first_window reference is only known here
    reference        DOUBLE PRECISION,
    reference_source TEXT,
    -- the last judged value (decay: accuracy or mean reward; stale: age in seconds) and samples,
    -- for `ferry endpoint show` and people reading the row
    last_value       DOUBLE PRECISION,
    last_samples     BIGINT,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (endpoint, kind)
);
