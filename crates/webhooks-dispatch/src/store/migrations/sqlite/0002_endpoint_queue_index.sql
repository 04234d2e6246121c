-- Pending messages of one endpoint in due order, so a claim can take each endpoint's next messages without
-- walking every other endpoint's backlog in the due index. Partial like that index: finished history never
-- enters it.
CREATE INDEX IF NOT EXISTS webhooks_dispatch_outbox_endpoint_due_idx
    ON webhooks_dispatch_outbox (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
