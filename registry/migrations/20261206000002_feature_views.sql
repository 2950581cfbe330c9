-- Feature views: every registered version of a view's definition (entity key, ordered features
-- with their types, the source it was materialized from). A model version's lineage names the
-- view version it was trained with, and the registry checks it against this table.
-- Same shared subset of SQL as the other migrations: it runs on SQLite and PostgreSQL alike.

CREATE TABLE feature_views (
    name       TEXT NOT NULL,
    -- from 1; a new definition is a new version
    version    BIGINT NOT NULL,
    -- SHA-256 of the definition (FeatureViewSpec::sha256): the same definition is one version
    sha256     TEXT NOT NULL,
    -- the FeatureViewSpec, as JSON
    spec       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX feature_views_by_hash ON feature_views (name, sha256);
