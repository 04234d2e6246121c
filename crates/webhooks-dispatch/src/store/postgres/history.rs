//! PostgreSQL statements that list messages, newest first (see [`super`] for the conventions).

/// The first page of a newest-first listing has no cursor: the bound is then just above the newest id (a
/// longer string than the greatest id sorts after it under any collation), so `id < bound` stays one index
/// range whatever plan the server caches. `id < $n OR $n IS NULL` would read the same on a custom plan but,
/// on a generic one, turns the bound into a filter and every later page into a scan from the newest row.
macro_rules! before_cursor {
    ($n:literal) => {
        concat!(
            "o.id < COALESCE($",
            $n,
            "::text, (SELECT max(n.id) FROM webhooks_dispatch_outbox AS n) || 'z')"
        )
    };
}

/// $1 status (NULL: any), $2 created at or after, $3 created before (never NULL: the widest window when the
/// caller sets none), $4 the last id of the previous page (NULL for the first), $5 how many → messages as
/// `SELECT_MESSAGE` reads them, newest first (a backward range of the primary key; the filters are checked on
/// the rows it walks).
pub const LIST_MESSAGES: &str = concat!(
    "\
SELECT o.id, o.endpoint_id, o.event_type, o.status, o.attempts, o.next_attempt_at, o.created_at, o.updated_at,
       o.event_id, o.dead_reason
FROM webhooks_dispatch_outbox AS o
WHERE ",
    before_cursor!(4),
    "
  AND ($1::text IS NULL OR o.status = $1::text)
  AND o.created_at >= $2::timestamptz AND o.created_at < $3::timestamptz
ORDER BY o.id DESC LIMIT $5::int8"
);

/// $1 endpoint id, $2 status (NULL: any), $3 created at or after, $4 created before, $5 the last id of the
/// previous page (NULL for the first), $6 how many → that endpoint's messages, newest first (a backward range of the `(endpoint_id, id)` index). Disabled endpoints' messages included.
pub const LIST_ENDPOINT_MESSAGES: &str = concat!(
    "\
SELECT o.id, o.endpoint_id, o.event_type, o.status, o.attempts, o.next_attempt_at, o.created_at, o.updated_at,
       o.event_id, o.dead_reason
FROM webhooks_dispatch_outbox AS o
WHERE o.endpoint_id = $1::text AND ",
    before_cursor!(5),
    "
  AND ($2::text IS NULL OR o.status = $2::text)
  AND o.created_at >= $3::timestamptz AND o.created_at < $4::timestamptz
ORDER BY o.endpoint_id DESC, o.id DESC LIMIT $6::int8"
);

/// $1 event id, $2 endpoint id (NULL: any), $3 status (NULL: any), $4 created at or after, $5 created before,
/// $6 the last id of the previous page (NULL for the first), $7 how many → the event's messages, newest first. Found by `webhooks_dispatch_outbox_event_idx` and sorted: an event has
/// at most one message per endpoint of its owner.
pub const LIST_EVENT_MESSAGES: &str = concat!(
    "\
SELECT o.id, o.endpoint_id, o.event_type, o.status, o.attempts, o.next_attempt_at, o.created_at, o.updated_at,
       o.event_id, o.dead_reason
FROM webhooks_dispatch_outbox AS o
WHERE o.event_id = $1::text AND ($2::text IS NULL OR o.endpoint_id = $2::text) AND ",
    before_cursor!(6),
    "
  AND ($3::text IS NULL OR o.status = $3::text)
  AND o.created_at >= $4::timestamptz AND o.created_at < $5::timestamptz
ORDER BY o.id DESC LIMIT $7::int8"
);
