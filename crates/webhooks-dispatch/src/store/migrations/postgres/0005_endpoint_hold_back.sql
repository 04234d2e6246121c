-- Holding back an endpoint that keeps failing: the transient failures (timeouts, unreachable, 408, 429, 5xx)
-- recorded since its last delivery, and, once they reach the dispatcher's threshold, the time before which no
-- claim takes any of its messages, old or new (NULL: not held back). Completions write both, only on a
-- change, so a healthy endpoint's row is never written.
ALTER TABLE webhooks_dispatch_endpoints
    ADD COLUMN consecutive_failures int4 NOT NULL DEFAULT 0,
    ADD COLUMN blocked_until timestamptz;

-- The endpoints claims pass over (usually none): disabled, or held back now or lately. Claims probe this for
-- each endpoint with pending work instead of reading the endpoint rows.
CREATE INDEX webhooks_dispatch_endpoints_held_back_idx ON webhooks_dispatch_endpoints (id)
    WHERE status = 'disabled' OR blocked_until IS NOT NULL;
