-- The skew check: each feature view version's last materialization keeps a sample of its rows
-- (the entities with the smallest hashes, see ferry_api::skew), and the window of comparisons
-- with the rows serving read online for those entities. The state row changes in the same
-- transaction as the skew.detected / skew.recovered event it decides (transactional outbox).
-- Same shared subset of SQL as the other migrations: it runs on SQLite and PostgreSQL alike.

CREATE TABLE feature_view_samples (
    name    TEXT NOT NULL,
    version BIGINT NOT NULL,
    entity  TEXT NOT NULL,
    -- the offline values in the view's order, as a JSON array (null: missing)
    vals    TEXT NOT NULL,
    PRIMARY KEY (name, version, entity),
    FOREIGN KEY (name, version) REFERENCES feature_views (name, version)
);

CREATE TABLE feature_view_skew (
    name            TEXT NOT NULL,
    version         BIGINT NOT NULL,
    -- the sample's bound (an unsigned 64-bit hash, in decimal)
    bound           TEXT NOT NULL,
    -- ferry_api::skew::SkewState as JSON: the window being filled, the open incident's event
    state           TEXT NOT NULL,
    materialized_at TEXT NOT NULL,
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, version) REFERENCES feature_views (name, version)
);
