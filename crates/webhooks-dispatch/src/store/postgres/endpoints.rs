//! PostgreSQL statements of the endpoint lifecycle (see [`super`] for the conventions).

/// $1 endpoint id, $2 reason, $3 now → the endpoint as `SELECT_ENDPOINT` reads it, then whether this call
/// disabled it (no row: unknown). An endpoint already disabled keeps its first reason and time. The status
/// before is read under the row lock, so of two racing calls exactly one reports the change.
pub const DISABLE_ENDPOINT: &str = concat!(
    "\
WITH before AS (
    SELECT id AS before_id, status AS was FROM webhooks_dispatch_endpoints
    WHERE id = $1::text AND deleted_at IS NULL FOR UPDATE
)
UPDATE webhooks_dispatch_endpoints
SET status = 'disabled',
    disabled_reason = CASE WHEN was = 'disabled' THEN disabled_reason ELSE $2::text END,
    disabled_at = CASE WHEN was = 'disabled' THEN disabled_at ELSE $3::timestamptz END
FROM before WHERE id = before_id
RETURNING ",
    endpoint_columns!(),
    ", was = 'active'"
);

/// $1 endpoint id, $2 now → the endpoint as `SELECT_ENDPOINT` reads it, then whether this call enabled it
/// (no row: unknown). When it was disabled, its unleased pending messages scheduled after now become due now
/// (their attempt counts kept).
pub const ENABLE_ENDPOINT: &str = concat!(
    "\
WITH before AS (
    SELECT id AS before_id, status AS was FROM webhooks_dispatch_endpoints
    WHERE id = $1::text AND deleted_at IS NULL FOR UPDATE
), resumed AS (
    UPDATE webhooks_dispatch_outbox AS o SET next_attempt_at = $2::timestamptz
    WHERE o.endpoint_id = $1::text AND o.status = 'pending' AND o.next_attempt_at > $2::timestamptz
      AND o.lease_token IS NULL AND (SELECT was FROM before) = 'disabled'
    RETURNING o.id
)
UPDATE webhooks_dispatch_endpoints
SET status = 'active', disabled_reason = NULL, disabled_at = NULL,
    -- Enabling a disabled endpoint also ends a hold from before it was disabled: try it now.
    consecutive_failures = CASE WHEN was = 'disabled' THEN 0 ELSE consecutive_failures END,
    blocked_until = CASE WHEN was = 'disabled' THEN NULL ELSE blocked_until END
FROM before WHERE id = before_id
RETURNING ",
    endpoint_columns!(),
    ", was = 'disabled'"
);

/// $1 endpoint id, $2 url, $3 event types, $4 whether $3 applies, $5 description, $6 metadata (JSON), $7
/// custom headers (JSON); NULL (or $4 false) leaves a field as it is → the endpoint as `SELECT_ENDPOINT` reads it (no row: unknown or deleted).
/// Claims read the URL and headers at each claim, so pending messages go to the new URL from their next
/// attempt.
pub const UPDATE_ENDPOINT: &str = concat!(
    "\
UPDATE webhooks_dispatch_endpoints
SET url = COALESCE($2::text, url), event_types = CASE WHEN $4::bool THEN $3::text[] ELSE event_types END,
    description = COALESCE($5::text, description), metadata = COALESCE($6::text, metadata),
    headers = COALESCE($7::text, headers)
WHERE id = $1::text AND deleted_at IS NULL
RETURNING ",
    endpoint_columns!()
);

/// $1 endpoint id, $2 now → (endpoint id, owner id, messages ended) when this call deleted it (no row: unknown or
/// already deleted). Soft: the row stays so its messages and attempts stay readable, but every statement
/// that finds endpoints by id or owner passes over it. Its pending messages end as dead with reason
/// `endpoint_deleted` — leased ones too, so an attempt in flight is discarded like a stale drain's. The
/// endpoint is also marked disabled, so a dispatch that raced with the deletion (its snapshot still saw the
/// endpoint) leaves a message that claims never visit.
pub const DELETE_ENDPOINT: &str = "\
WITH ep AS (
    UPDATE webhooks_dispatch_endpoints
    SET deleted_at = $2::timestamptz, status = 'disabled',
        disabled_reason = COALESCE(disabled_reason, 'manual'), disabled_at = COALESCE(disabled_at, $2::timestamptz)
    WHERE id = $1::text AND deleted_at IS NULL
    RETURNING id, owner_id
), ended AS (
    UPDATE webhooks_dispatch_outbox AS o
    SET status = 'dead', dead_reason = 'endpoint_deleted', lease_token = NULL, lease_expires_at = NULL,
        updated_at = $2::timestamptz
    WHERE o.endpoint_id = $1::text AND o.status = 'pending' AND EXISTS (SELECT 1 FROM ep)
    RETURNING o.id
), destroyed AS (
    -- A deleted endpoint signs nothing again, so its keys' secrets are destroyed rather than kept.
    DELETE FROM webhooks_dispatch_endpoint_keys AS k WHERE k.endpoint_id = $1::text AND EXISTS (SELECT 1 FROM ep)
)
SELECT id, owner_id, (SELECT count(*) FROM ended)::int8 FROM ep";

/// $1 status (NULL: any), $2 the last id of the previous page ('' for the first), $3 how many → endpoints as
/// `SELECT_ENDPOINT` reads them, in id order (a range of the primary key).
pub const LIST_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhooks_dispatch_endpoints
WHERE id > $2::text AND ($1::text IS NULL OR status = $1::text) AND deleted_at IS NULL
ORDER BY id LIMIT $3::int8"
);

/// $1 owner id, $2 status (NULL: any), $3 the last id of the previous page ('' for the first), $4 how many
/// → that owner's endpoints in id order (a range of the `(owner_id, id)` index).
pub const LIST_OWNER_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhooks_dispatch_endpoints
WHERE owner_id = $1::text AND id > $3::text AND ($2::text IS NULL OR status = $2::text) AND deleted_at IS NULL
ORDER BY owner_id, id LIMIT $4::int8"
);
