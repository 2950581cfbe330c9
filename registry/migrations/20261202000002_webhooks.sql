-- Webhooks, their deliveries, and the cursor of the RabbitMQ relay. Same shared subset of SQL as
-- the first migration: it runs on SQLite and PostgreSQL alike.

CREATE TABLE webhooks (
    -- a UUID
    id         TEXT PRIMARY KEY,
    -- id of the webhook.created event: a creation order for newest-first paging
    seq        BIGINT NOT NULL UNIQUE,
    url        TEXT NOT NULL,
    -- the event type patterns it subscribes to, as a JSON array
    events     TEXT NOT NULL,
    -- the HMAC key of its signatures; never returned by the API after creation
    secret     TEXT NOT NULL,
    -- the last event id the fan-out has created deliveries for. Advanced in the same transaction
    -- as the delivery rows it covers, so a crash neither skips nor doubles an event.
    cursor     BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

-- One row per (webhook, matching event): the unit of retry, dead-lettering and replay.
CREATE TABLE webhook_deliveries (
    -- a UUID, sent as X-Ferry-Delivery: the same on every attempt, so receivers can deduplicate
    id              TEXT PRIMARY KEY,
    webhook         TEXT NOT NULL REFERENCES webhooks (id),
    event_id        BIGINT NOT NULL REFERENCES events (id),
    event_type      TEXT NOT NULL,
    -- pending, delivered or dead
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    -- when the next attempt may start (RFC 3339, so text order is time order)
    next_attempt_at TEXT NOT NULL,
    -- HTTP status of the last attempt, when the receiver answered
    last_status     BIGINT,
    -- why the last attempt failed: a status code or a transport error, never a secret
    last_error      TEXT,
    -- the replica sending it right now, and until when that claim holds: a replica that dies
    -- mid-send leaves a claim that simply expires
    claimed_by      TEXT,
    claimed_until   TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    delivered_at    TEXT,
    UNIQUE (webhook, event_id)
);
-- the sender's scan for due work
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
-- the per-webhook listings, newest event first
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, status, event_id);

-- Where the relay to a message broker stands, per exchange: the last event the broker confirmed.
-- A lease keeps registry replicas sharing the database from all publishing the same events.
CREATE TABLE relay_cursors (
    name         TEXT PRIMARY KEY,
    last_event   BIGINT NOT NULL,
    leased_by    TEXT,
    leased_until TEXT,
    updated_at   TEXT NOT NULL
);
