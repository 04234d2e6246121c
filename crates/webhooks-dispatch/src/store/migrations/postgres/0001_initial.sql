-- The schema as it stood before numbered migrations, unchanged. Every statement is IF NOT EXISTS, so on a
-- database that the unnumbered migrate() already created this only records version 1.

CREATE TABLE IF NOT EXISTS webhooks_dispatch_endpoints (
    id          text        PRIMARY KEY,
    owner_id    text        NOT NULL,
    url         text        NOT NULL,
    secret      text        NOT NULL,
    -- Deduplicated and sorted; empty means every event type.
    event_types text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_dispatch_endpoints_owner_idx
    ON webhooks_dispatch_endpoints (owner_id);

CREATE TABLE IF NOT EXISTS webhooks_dispatch_outbox (
    id               text        PRIMARY KEY,
    endpoint_id      text        NOT NULL REFERENCES webhooks_dispatch_endpoints (id),
    event_type       text        NOT NULL,
    -- The exact serialized bytes that are signed and sent (jsonb would reorder keys and break signatures).
    payload          text        NOT NULL,
    idempotency_key  text,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    -- A drain owns a row while lease_token is set and lease_expires_at is in the future; a crashed drain's
    -- rows become due again once the lease expires.
    lease_token      text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- NULL keys never conflict, so only keyed dispatches are deduplicated.
    CONSTRAINT webhooks_dispatch_outbox_idempotency_key UNIQUE (endpoint_id, idempotency_key)
);
-- Only pending rows are ever scanned for work, so the claim cost does not grow with finished history.
CREATE INDEX IF NOT EXISTS webhooks_dispatch_outbox_due_idx
    ON webhooks_dispatch_outbox (next_attempt_at, id) WHERE status = 'pending';

CREATE TABLE IF NOT EXISTS webhooks_dispatch_attempts (
    message_id      text        NOT NULL REFERENCES webhooks_dispatch_outbox (id),
    attempt_no      integer     NOT NULL,
    attempted_at    timestamptz NOT NULL,
    status_code     integer,
    outcome         text        NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'dead')),
    latency_ms      bigint      NOT NULL,
    next_attempt_at timestamptz,
    error           text,
    PRIMARY KEY (message_id, attempt_no)
);
