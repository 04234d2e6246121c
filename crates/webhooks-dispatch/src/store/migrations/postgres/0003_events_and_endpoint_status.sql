-- Endpoints can be disabled (by an operator, or by the sender when a receiver is gone or keeps failing):
-- a disabled endpoint keeps its pending messages, unattempted, until it is enabled again. Existing endpoints
-- are active.
ALTER TABLE webhooks_dispatch_endpoints
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    ADD COLUMN disabled_reason text CHECK (disabled_reason IN ('manual', 'gone', 'failing')),
    ADD COLUMN disabled_at timestamptz,
    ADD CONSTRAINT webhooks_dispatch_endpoints_disabled_why
        CHECK ((status = 'disabled') = (disabled_reason IS NOT NULL AND disabled_at IS NOT NULL));

-- An event: what an owner's application reported, fanned out to every subscribed endpoint of that owner.
-- Its payload is stored here once; its messages point to it and carry an empty payload of their own.
-- Idempotency is per owner (NULL keys never conflict).
CREATE TABLE webhooks_dispatch_events (
    id              text        PRIMARY KEY,
    owner_id        text        NOT NULL,
    event_type      text        NOT NULL,
    payload         text        NOT NULL,
    idempotency_key text,
    created_at      timestamptz NOT NULL,
    CONSTRAINT webhooks_dispatch_events_idempotency_key UNIQUE (owner_id, idempotency_key)
);

-- Endpoints an event did not go to, and why, so nobody has to guess (and a replay can send them later).
CREATE TABLE webhooks_dispatch_event_skips (
    event_id        text NOT NULL REFERENCES webhooks_dispatch_events (id),
    endpoint_id     text NOT NULL REFERENCES webhooks_dispatch_endpoints (id),
    reason          text NOT NULL CHECK (reason IN ('endpoint_disabled')),
    disabled_reason text CHECK (disabled_reason IN ('manual', 'gone', 'failing')),
    PRIMARY KEY (event_id, endpoint_id)
);

ALTER TABLE webhooks_dispatch_outbox
    ADD COLUMN event_id text REFERENCES webhooks_dispatch_events (id);
CREATE INDEX webhooks_dispatch_outbox_event_idx
    ON webhooks_dispatch_outbox (event_id, endpoint_id) WHERE event_id IS NOT NULL;

-- An owner's endpoints in id order: fan-out finds them by owner, and listing pages through them by id
-- (keyset). Replaces the owner-only index of 0001.
CREATE INDEX webhooks_dispatch_endpoints_owner_key_idx ON webhooks_dispatch_endpoints (owner_id, id);
DROP INDEX IF EXISTS webhooks_dispatch_endpoints_owner_idx;

-- The disabled endpoints alone (usually none): claims skip their backlogs by probing this, not by reading
-- every open endpoint's row.
CREATE INDEX webhooks_dispatch_endpoints_disabled_idx ON webhooks_dispatch_endpoints (id) WHERE status = 'disabled';
