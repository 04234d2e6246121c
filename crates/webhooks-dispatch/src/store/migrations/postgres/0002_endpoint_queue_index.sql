-- Pending messages of one endpoint in due order, so a claim can take each endpoint's next messages without
-- walking every other endpoint's backlog in the due index. Partial like that index: finished history never
-- enters it.
CREATE INDEX IF NOT EXISTS webhooks_dispatch_outbox_endpoint_due_idx
    ON webhooks_dispatch_outbox (endpoint_id, next_attempt_at, id) WHERE status = 'pending';

-- And it replaces the global due index. With both, a planner whose statistics still say nothing is pending
-- (a large history analyzed before the current backlog arrived) walks the global index per endpoint and
-- filters by endpoint, which made each claim a scan of every due message; NEXT_DUE and QUEUE_STATS read the
-- per-endpoint index too.
DROP INDEX IF EXISTS webhooks_dispatch_outbox_due_idx;
