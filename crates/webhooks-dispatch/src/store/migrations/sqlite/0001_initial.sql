-- The schema as it stood before numbered migrations, unchanged. Every statement is IF NOT EXISTS, so on a
-- database that the unnumbered migrate() already created this only records version 1.

CREATE TABLE IF NOT EXISTS webhooks_dispatch_endpoints (
    id          TEXT    PRIMARY KEY,
    owner_id    TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    -- JSON array, deduplicated and sorted; [] means every event type.
    event_types TEXT    NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_dispatch_endpoints_owner_idx
    ON webhooks_dispatch_endpoints (owner_id);

CREATE TABLE IF NOT EXISTS webhooks_dispatch_outbox (
    id               TEXT    PRIMARY KEY,
    endpoint_id      TEXT    NOT NULL REFERENCES webhooks_dispatch_endpoints (id),
    event_type       TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    idempotency_key  TEXT,
    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (endpoint_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS webhooks_dispatch_outbox_due_idx
    ON webhooks_dispatch_outbox (next_attempt_at, id) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS webhooks_dispatch_attempts (
    message_id      TEXT    NOT NULL REFERENCES webhooks_dispatch_outbox (id),
    attempt_no      INTEGER NOT NULL,
    attempted_at    INTEGER NOT NULL,
    status_code     INTEGER,
    outcome         TEXT    NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'dead')),
    latency_ms      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    error           TEXT,
    PRIMARY KEY (message_id, attempt_no)
);
