-- See the PostgreSQL migration of the same name. SQLite adds one column per statement, and a column added
-- with a CHECK may only check itself, so the rule tying status to its reason is kept by the statements.
ALTER TABLE webhooks_dispatch_endpoints
    ADD COLUMN status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled'));
ALTER TABLE webhooks_dispatch_endpoints
    ADD COLUMN disabled_reason TEXT CHECK (disabled_reason IN ('manual', 'gone', 'failing'));
ALTER TABLE webhooks_dispatch_endpoints
    ADD COLUMN disabled_at INTEGER;

CREATE TABLE webhooks_dispatch_events (
    id              TEXT    PRIMARY KEY,
    owner_id        TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (owner_id, idempotency_key)
);

CREATE TABLE webhooks_dispatch_event_skips (
    event_id        TEXT NOT NULL REFERENCES webhooks_dispatch_events (id),
    endpoint_id     TEXT NOT NULL REFERENCES webhooks_dispatch_endpoints (id),
    reason          TEXT NOT NULL CHECK (reason IN ('endpoint_disabled')),
    disabled_reason TEXT CHECK (disabled_reason IN ('manual', 'gone', 'failing')),
    PRIMARY KEY (event_id, endpoint_id)
);

ALTER TABLE webhooks_dispatch_outbox
    ADD COLUMN event_id TEXT REFERENCES webhooks_dispatch_events (id);
CREATE INDEX webhooks_dispatch_outbox_event_idx
    ON webhooks_dispatch_outbox (event_id, endpoint_id) WHERE event_id IS NOT NULL;

CREATE INDEX webhooks_dispatch_endpoints_owner_key_idx ON webhooks_dispatch_endpoints (owner_id, id);
DROP INDEX IF EXISTS webhooks_dispatch_endpoints_owner_idx;

-- The disabled endpoints alone (usually none): claims skip their backlogs by probing this, not by reading
-- every open endpoint's row.
CREATE INDEX webhooks_dispatch_endpoints_disabled_idx ON webhooks_dispatch_endpoints (id) WHERE status = 'disabled';
