//! Every statement the core runs on PostgreSQL, in one place: this file and its two children
//! (`endpoints`: the endpoint lifecycle; `history`: message listings), re-exported here.
//!
//! Rules kept here: each statement touches only `webhooks_dispatch_*` tables; each parameter carries an
//! explicit cast so all drivers agree on its type; nothing is ever formatted into these strings.

/// Creates the table that records applied migrations. Sent as one simple-query script (a single implicit
/// transaction) under the transaction-scoped advisory lock that every migration takes: plain `CREATE TABLE IF
/// NOT EXISTS` from several processes at once races on the catalog.
pub const CREATE_MIGRATIONS_TABLE: &str = r#"
SELECT pg_advisory_xact_lock(7305546289152737061);

CREATE TABLE IF NOT EXISTS webhooks_dispatch_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"#;

/// → version of every applied migration, ascending.
pub const SELECT_MIGRATIONS: &str = "SELECT version FROM webhooks_dispatch_migrations ORDER BY version";

/// The numbered migrations (files under `store/migrations/postgres/`), oldest first.
pub const MIGRATIONS: &[super::Migration] = super::migrations::POSTGRES;

/// The columns every endpoint read returns, in the order `Endpoint::from_row` decodes them; a macro so each
/// statement stays one `'static` string.
macro_rules! endpoint_columns {
    () => {
        "id, owner_id, url, event_types, created_at, status, disabled_reason, disabled_at, description, metadata, \
         headers"
    };
}

/// $1 id, $2 owner_id, $3 url, $4 its first key's id, $5 event_types, $6 created_at, $7 description,
/// $8 metadata (JSON), $9 custom headers (JSON), $10 the key's algorithm, $11 its stored secret, $12 its public
/// key (NULL for HMAC): the endpoint and its current key, in one statement.
pub const INSERT_ENDPOINT: &str = "\
WITH endpoint AS (
    INSERT INTO webhooks_dispatch_endpoints
        (id, owner_id, url, event_types, created_at, description, metadata, headers)
    VALUES ($1::text, $2::text, $3::text, $5::text[], $6::timestamptz, $7::text, $8::text, $9::text)
    RETURNING id
)
INSERT INTO webhooks_dispatch_endpoint_keys (id, endpoint_id, algorithm, secret, public_key, created_at, expires_at)
SELECT $4::text, id, $10::text, $11::text, $12::text, $6::timestamptz, NULL FROM endpoint";

/// $1 id → `endpoint_columns!`. Never selects the secret; a deleted endpoint is not found.
pub const SELECT_ENDPOINT: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhooks_dispatch_endpoints WHERE id = $1::text AND deleted_at IS NULL"
);

/// Checks the endpoint and subscription and inserts, in one round trip.
/// $1 message id, $2 endpoint_id, $3 event_type, $4 payload, $5 idempotency_key, $6 now
/// → found (int8), subscribed (bool, NULL when not found), inserted id (NULL on idempotency conflict, or when
/// refused), active (bool, NULL when not found).
/// A disabled endpoint takes nothing new; a deleted one is not found.
/// `ON CONFLICT DO NOTHING` waits for a concurrent uncommitted insert of the same key, so two racing
/// dispatches still produce exactly one row.
pub const INSERT_MESSAGE: &str = "\
WITH ep AS (
    SELECT id, (cardinality(event_types) = 0 OR $3::text = ANY (event_types)) AS subscribed,
           status = 'active' AS active
    FROM webhooks_dispatch_endpoints WHERE id = $2::text AND deleted_at IS NULL
), ins AS (
    INSERT INTO webhooks_dispatch_outbox
        (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
    SELECT $1::text, ep.id, $3::text, $4::text, $5::text, $6::timestamptz, $6::timestamptz, $6::timestamptz
    FROM ep WHERE ep.subscribed AND ep.active
    ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM ep)::int8, (SELECT bool_or(subscribed) FROM ep), (SELECT id FROM ins),
       (SELECT bool_or(active) FROM ep)";

/// $1 endpoint_id, $2 idempotency_key → id, event_type, payload (to tell a replay from a conflicting reuse of
/// the key). Runs after a conflict, in a new snapshot, so it sees the row a concurrent transaction committed.
pub const SELECT_MESSAGE_BY_KEY: &str = "\
SELECT id, event_type, payload FROM webhooks_dispatch_outbox
WHERE endpoint_id = $1::text AND idempotency_key = $2::text";

/// $1 id → id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at.
pub const SELECT_MESSAGE: &str = "\
SELECT id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at, event_id,
       dead_reason
FROM webhooks_dispatch_outbox WHERE id = $1::text";

/// The endpoints with pending messages, one per row (and a final NULL), by a skip scan of the per-endpoint
/// queue index: one index probe per endpoint, however many messages each has. Shared by the statements that
/// work endpoint by endpoint; a macro so each stays one `'static` string.
macro_rules! pending_endpoints {
    () => {
        "WITH RECURSIVE pending_endpoints AS (
    (SELECT o.endpoint_id FROM webhooks_dispatch_outbox AS o
     WHERE o.status = 'pending' ORDER BY o.endpoint_id, o.next_attempt_at, o.id LIMIT 1)
    UNION ALL
    SELECT (SELECT o.endpoint_id FROM webhooks_dispatch_outbox AS o
            WHERE o.status = 'pending' AND o.endpoint_id > p.endpoint_id
            ORDER BY o.endpoint_id, o.next_attempt_at, o.id LIMIT 1)
    FROM pending_endpoints AS p WHERE p.endpoint_id IS NOT NULL
)"
    };
}

/// Claims up to $4 due messages for one drain by stamping them with a lease, visiting only the rows it takes.
/// $1 lease token, $2 lease expiry, $3 now, $4 limit, $5 endpoints this process already holds messages for,
/// $6 most messages per endpoint in this process, $7 how many it holds for each of $5 (a worker that claims
/// ahead for an endpoint that keeps up reports fewer, even below zero, which raises that endpoint's quota),
/// $8 owners whose per-owner cap this process has in flight (their endpoints are passed over)
/// → id, endpoint_id, payload, attempts, url, signing keys, headers, owner_id. The signing keys are the
/// endpoint's keys unexpired at $3, newest first, as `id secret id secret …` (ids and stored secrets hold no
/// space). Endpoints disabled or held back (`blocked_until` after $3) are passed over.
///
/// Driven by endpoints, not by a global scan of the due index: a skip scan of the per-endpoint queue index
/// lists the endpoints with pending work (one index probe each), endpoints at their quota in this process are
/// dropped before anything else is read, each remaining endpoint's oldest due message (one more probe) gives
/// its place in line (oldest first, so no endpoint starves behind another's backlog), and in that order each
/// endpoint's queue is locked, oldest first, up to its quota, `FOR UPDATE SKIP LOCKED`, until $4 rows are
/// taken; the endpoints after that are not read at all. A busy, backed-off or hanging endpoint costs an index
/// probe or two and locks nothing. The picked rows are then updated by id (the primary key, whatever the
/// statistics estimate). The lease (not the row lock, which ends with this statement) keeps other drains away during
/// delivery; a concurrent drain's locked rows are skipped, and the lease condition skips rows another drain
/// holds. Needs `webhooks_dispatch_outbox_endpoint_due_idx` (migration 0002); the per-endpoint scans order by
/// its exact key (`endpoint_id` first, a constant there) so the planner takes it even when statistics say
/// nothing is pending, instead of walking the global due index and filtering by endpoint (that plan made
/// claims 100 times slower with a million finished rows).
pub const CLAIM_DUE: &str = concat!(
    pending_endpoints!(),
    ", busy AS (
    SELECT * FROM unnest($5::text[], $7::int8[]) AS b(endpoint_id, held)
), open_endpoints AS (
    -- A disabled or held-back endpoint's backlog waits: it costs the skip scan's probe and a probe of the
    -- index of such endpoints, which is empty while none is (cheaper than reading every open endpoint's row).
    SELECT p.endpoint_id, $6::int8 - COALESCE(busy.held, 0) AS quota
    FROM pending_endpoints AS p
    LEFT JOIN busy ON busy.endpoint_id = p.endpoint_id
    WHERE p.endpoint_id IS NOT NULL AND $6::int8 - COALESCE(busy.held, 0) > 0
      AND NOT EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints AS d
                     WHERE d.id = p.endpoint_id AND (d.status = 'disabled' OR d.blocked_until > $3::timestamptz))
      -- Owners with every slot of this process in flight: their endpoints wait too. Only then is each open
      -- endpoint's row read (by its primary key); with no owner at its cap this test reads nothing.
      AND (cardinality($8::text[]) = 0
           OR NOT EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints AS f
                          WHERE f.id = p.endpoint_id AND f.owner_id = ANY ($8::text[])))
), heads AS (
    SELECT e.endpoint_id, e.quota, h.head
    FROM open_endpoints AS e CROSS JOIN LATERAL (
        SELECT o.next_attempt_at AS head FROM webhooks_dispatch_outbox AS o
        WHERE o.endpoint_id = e.endpoint_id AND o.status = 'pending' AND o.next_attempt_at <= $3::timestamptz
          AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= $3::timestamptz)
        ORDER BY o.endpoint_id, o.next_attempt_at, o.id LIMIT 1
    ) AS h
), due AS (
    -- Endpoints in line (oldest head first), each giving up to its quota, until the limit is reached: the
    -- nested loop runs the per-endpoint lock scans in that order and stops pulling at the limit, so the
    -- endpoints after it are never read and nothing beyond the limit is locked.
    SELECT picked.id
    FROM (SELECT endpoint_id, quota, head FROM heads ORDER BY head, endpoint_id) AS g CROSS JOIN LATERAL (
        SELECT o.id FROM webhooks_dispatch_outbox AS o
        WHERE o.endpoint_id = g.endpoint_id AND o.status = 'pending' AND o.next_attempt_at <= $3::timestamptz
          AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= $3::timestamptz)
        ORDER BY o.endpoint_id, o.next_attempt_at, o.id
        LIMIT g.quota
        FOR UPDATE OF o SKIP LOCKED
    ) AS picked
    LIMIT $4::int8
)
UPDATE webhooks_dispatch_outbox AS o
SET lease_token = $1::text, lease_expires_at = $2::timestamptz
FROM webhooks_dispatch_endpoints AS e
WHERE o.id = ANY (ARRAY(SELECT due.id FROM due)) AND e.id = o.endpoint_id
RETURNING o.id, o.endpoint_id,
    CASE WHEN o.event_id IS NULL THEN o.payload
         ELSE (SELECT ev.payload FROM webhooks_dispatch_events AS ev WHERE ev.id = o.event_id) END,
    o.attempts, e.url,
    (SELECT string_agg(k.id || ' ' || k.secret, ' ' ORDER BY k.created_at DESC, k.id DESC)
     FROM webhooks_dispatch_endpoint_keys AS k
     WHERE k.endpoint_id = o.endpoint_id AND (k.expires_at IS NULL OR k.expires_at > $3::timestamptz)),
    e.headers, e.owner_id"
);

/// Records many attempts and moves their messages on, in one round trip. Parallel arrays, one element per
/// attempt: $1 message ids, $2 lease tokens, $3 outcomes ('delivered' | 'retrying' | 'dead'), $4 attempted_at,
/// $5 status codes (NULL: no response), $6 latency_ms, $7 next_attempt_at (NULL unless retrying), $8 errors;
/// $9 whether a `410 Gone` disables its endpoint, $10 the failing cutoff (an endpoint failing since before
/// it, with a message gone dead meanwhile, is disabled; year 1 when the rule is off), $11 after how many
/// transient failures in a row an endpoint is held back, $12 the first hold in ms (doubling with each further
/// failure), $13 the longest hold in ms → (message_id, NULL, NULL, NULL) for
/// each attempt recorded, and (NULL, endpoint id, owner id, reason) for each endpoint this statement
/// disabled (reason `gone` or `failing`).
/// Matching on the lease token refuses a stale drain whose lease expired and was re-claimed; matching on
/// a status that is not final means a delivered or dead message never changes again. That test is written
/// `NOT IN ('delivered', 'dead')` (the same rows, by the status CHECK) rather than `= 'pending'` on purpose:
/// the planner may then not answer the join through the pending-only index, whose estimate is about one row
/// whenever the table was last analyzed with nothing pending, and which then walks the whole backlog per
/// call (measured: 335 ms per completion over 1,000,000 finished rows, against 4 ms); each row is reached
/// by its primary key instead. The attempt number comes from
/// the row itself and is unique per message by the primary key.
/// Endpoint backoff: when an endpoint could not be reached (connection, TLS or DNS failure, timeout), the
/// endpoint itself waits for that attempt's retry time (`blocked_until`, which every claim honours, for new
/// messages too), so a down endpoint costs one attempt per backoff step rather than one timeout per queued
/// message. One endpoint row is written, however long its queue: moving each waiting message instead cost
/// a write per message (10,000 rows for a tarpit tenant's first wave of timeouts) and left their old index
/// entries for every claim to step over.
/// Holding back: every retried attempt (a timeout, no connection, 408, 429 or 5xx) counts against its
/// endpoint until one is delivered; from $11 in a row on, the endpoint's `blocked_until` moves to the last
/// attempt plus $12 ms doubled per failure beyond $11, at most $13 ms (or a 429's own Retry-After, if later),
/// and no claim takes any of its messages, new ones included, before then. A delivery clears both.
pub const COMPLETE_ATTEMPTS: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[], $6::int8[],
                         $7::timestamptz[], $8::text[])
        AS t(id, lease_token, outcome, attempted_at, status_code, latency_ms, next_attempt_at, error)
), done AS (
    UPDATE webhooks_dispatch_outbox AS o
    SET status = CASE i.outcome WHEN 'retrying' THEN 'pending' ELSE i.outcome END,
        attempts = o.attempts + 1,
        next_attempt_at = COALESCE(i.next_attempt_at, o.next_attempt_at),
        lease_token = NULL, lease_expires_at = NULL, updated_at = i.attempted_at
    FROM input AS i
    WHERE o.id = i.id AND o.lease_token = i.lease_token AND o.status NOT IN ('delivered', 'dead')
    RETURNING o.id, o.endpoint_id, o.attempts, i.outcome, i.attempted_at, i.status_code, i.latency_ms,
              i.next_attempt_at, i.error
), batch AS (
    -- Per endpoint of this batch: whether anything was delivered (which resets the failure clock), the first
    -- failure (which starts it), the last message gone dead, the first 410 when a 410 disables, and, when it
    -- could not be reached at all (no HTTP status), the retry time its whole queue waits for.
    SELECT endpoint_id, bool_or(outcome = 'delivered') AS ok,
           count(*) FILTER (WHERE outcome = 'retrying') AS failed,
           max(next_attempt_at) FILTER (WHERE outcome = 'retrying' AND status_code IS NULL) AS unreachable_until,
           max(next_attempt_at) FILTER (WHERE outcome = 'retrying' AND status_code = 429) AS asked_until,
           min(attempted_at) FILTER (WHERE outcome <> 'delivered') AS first_failure,
           max(attempted_at) FILTER (WHERE outcome = 'dead') AS dead_at,
           min(attempted_at) FILTER (WHERE outcome = 'dead' AND status_code = 410 AND $9::bool) AS gone_at,
           max(attempted_at) AS at
    FROM done GROUP BY endpoint_id
), health AS (
    -- What becomes of each such active endpoint: a 410 Gone is the receiver saying the endpoint is no more
    -- (Standard Webhooks), so it is disabled in this same statement; an endpoint failing since before the
    -- cutoff $10 (year 1 when the rule is off) with a message gone dead since then is disabled as failing.
    SELECT b.*, CASE
        WHEN ep.status <> 'active' THEN NULL
        WHEN b.gone_at IS NOT NULL THEN 'gone'
        WHEN NOT b.ok AND COALESCE(ep.failing_since, b.first_failure) <= $10::timestamptz
             AND (b.dead_at IS NOT NULL OR ep.last_dead_at >= ep.failing_since) THEN 'failing'
        END AS why
    FROM batch AS b JOIN webhooks_dispatch_endpoints AS ep ON ep.id = b.endpoint_id
), changed AS (
    -- Written only when something changes, so a healthy endpoint's row is never locked by completions.
    -- `health` read the endpoint in this statement's snapshot; the conditions on `ep` here are checked again
    -- on the latest row version, so a concurrent delivery's reset is not undone by a disabling decided on
    -- an older one.
    UPDATE webhooks_dispatch_endpoints AS ep
    SET failing_since = CASE WHEN h.ok THEN NULL ELSE COALESCE(ep.failing_since, h.first_failure) END,
        last_dead_at = COALESCE(h.dead_at, ep.last_dead_at),
        consecutive_failures = CASE WHEN h.ok THEN 0 ELSE least(ep.consecutive_failures + h.failed, 1000000) END,
        blocked_until = CASE
            WHEN h.ok THEN NULL
            WHEN ep.consecutive_failures + h.failed < $11::int8 THEN greatest(ep.blocked_until, h.unreachable_until)
            ELSE greatest(ep.blocked_until, h.unreachable_until, h.asked_until, h.at + interval '1 millisecond'
                 * least($13::int8, $12::int8 << least(ep.consecutive_failures + h.failed - $11::int8, 40)::int4))
            END,
        status = CASE WHEN h.why IS NULL THEN ep.status ELSE 'disabled' END,
        disabled_reason = COALESCE(h.why, ep.disabled_reason),
        disabled_at = CASE WHEN h.why IS NULL THEN ep.disabled_at ELSE COALESCE(h.gone_at, h.at) END
    FROM health AS h
    WHERE ep.id = h.endpoint_id
      AND (h.why IS NOT NULL OR h.dead_at IS NOT NULL OR h.failed > 0
           OR (h.ok AND (ep.failing_since IS NOT NULL OR ep.consecutive_failures > 0))
           OR (NOT h.ok AND ep.failing_since IS NULL))
      AND (h.why IS NULL OR ep.status = 'active')
      AND (h.why IS NULL OR h.why <> 'failing' OR ep.failing_since IS NOT NULL)
    RETURNING ep.id, ep.owner_id, h.why
), recorded AS (
    INSERT INTO webhooks_dispatch_attempts
        (message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error)
    SELECT id, attempts, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error FROM done
    RETURNING message_id
)
SELECT message_id, NULL::text, NULL::text, NULL::text FROM recorded
UNION ALL
SELECT NULL::text, id, owner_id, why FROM changed WHERE why IS NOT NULL";

/// Gives back claimed messages that were never attempted (a worker shutting down), so they are due at once
/// instead of after the lease. $1 message ids, $2 their lease tokens → id of each released message. Rows are
/// reached by id, never through the pending-only index (see `COMPLETE_ATTEMPTS`).
pub const RELEASE_CLAIMS: &str = "\
UPDATE webhooks_dispatch_outbox AS o
SET lease_token = NULL, lease_expires_at = NULL
FROM unnest($1::text[], $2::text[]) AS r(id, lease_token)
WHERE o.id = r.id AND o.lease_token = r.lease_token AND o.status NOT IN ('delivered', 'dead')
RETURNING o.id";

/// $1 now → the earliest future next_attempt_at among pending messages (NULL if none), so an idle worker
/// sleeps exactly until the next retry; for an endpoint held back, the end of its hold instead (its messages,
/// due or not, wait for that). The same skip scan of the per-endpoint index as `CLAIM_DUE`, then a probe or
/// two per endpoint: cost grows with the endpoints that have pending work, not with the messages.
pub const NEXT_DUE: &str = concat!(
    pending_endpoints!(),
    "
SELECT min(CASE WHEN b.blocked_until > $1::timestamptz THEN b.blocked_until ELSE h.next_attempt_at END)
FROM pending_endpoints AS p
LEFT JOIN LATERAL (
    SELECT d.status, d.blocked_until FROM webhooks_dispatch_endpoints AS d
    WHERE d.id = p.endpoint_id AND (d.status = 'disabled' OR d.blocked_until IS NOT NULL)
) AS b ON true
LEFT JOIN LATERAL (
    SELECT o.next_attempt_at FROM webhooks_dispatch_outbox AS o
    WHERE o.endpoint_id = p.endpoint_id AND o.status = 'pending' AND o.next_attempt_at > $1::timestamptz
    ORDER BY o.endpoint_id, o.next_attempt_at LIMIT 1
) AS h ON true
WHERE p.endpoint_id IS NOT NULL AND COALESCE(b.status, 'active') <> 'disabled'"
);

/// The channel workers LISTEN on.
pub const NOTIFY_CHANNEL: &str = "webhooks_dispatch_due";

/// Wakes listening workers. Sent through the dispatching executor, so inside a caller's transaction it is
/// delivered only at commit, when the new rows are visible. Debounced by the dispatcher.
pub const NOTIFY_DUE: &str = "SELECT pg_notify('webhooks_dispatch_due', '')";

/// Subscribes a dedicated connection to [`NOTIFY_CHANNEL`].
pub const LISTEN_DUE: &str = "LISTEN webhooks_dispatch_due";

/// Inserts many messages in one round trip, all or nothing: if any endpoint is unknown or not subscribed, or
/// any idempotency key is already held by a different message, nothing is inserted. Parallel arrays: $1 message ids, $2 endpoint ids, $3 event types, $4 payloads,
/// $5 idempotency keys (NULL: none), $6 now
/// → per input in order: ordinal, found, subscribed, message id (NULL if a concurrent commit of the same key
/// is not yet visible to this snapshot), created, same (false when the key's existing message has another
/// event type or payload).
pub const INSERT_MESSAGES: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS t(id, endpoint_id, event_type, payload, idempotency_key, ord)
), checked AS (
    SELECT i.id, i.endpoint_id, i.event_type, i.payload, i.idempotency_key, i.ord,
           e.id IS NOT NULL AS found,
           COALESCE(cardinality(e.event_types) = 0 OR i.event_type = ANY (e.event_types), false) AS subscribed,
           COALESCE(e.status = 'active', false) AS active,
           EXISTS (SELECT 1 FROM webhooks_dispatch_outbox AS x
                   WHERE x.endpoint_id = i.endpoint_id AND x.idempotency_key = i.idempotency_key
                     AND (x.event_type <> i.event_type OR x.payload <> i.payload)) AS conflicting
    FROM input AS i
    LEFT JOIN webhooks_dispatch_endpoints AS e ON e.id = i.endpoint_id AND e.deleted_at IS NULL
), ins AS (
    INSERT INTO webhooks_dispatch_outbox
        (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
    SELECT id, endpoint_id, event_type, payload, idempotency_key,
           $6::timestamptz, $6::timestamptz, $6::timestamptz
    FROM checked
    WHERE (SELECT bool_and(subscribed AND active AND NOT conflicting) FROM checked)
    ORDER BY ord
    ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING
    RETURNING id, endpoint_id, idempotency_key, event_type, payload
)
SELECT c.ord, c.found, c.subscribed,
       COALESCE(n.id, k.id, o.id),
       n.id IS NOT NULL,
       CASE WHEN n.id IS NOT NULL THEN true
            WHEN k.id IS NOT NULL THEN k.event_type = c.event_type AND k.payload = c.payload
            WHEN o.id IS NOT NULL THEN o.event_type = c.event_type AND o.payload = c.payload
            ELSE true END,
       c.active
FROM checked AS c
LEFT JOIN ins AS n ON n.id = c.id
LEFT JOIN ins AS k ON n.id IS NULL AND k.endpoint_id = c.endpoint_id AND k.idempotency_key = c.idempotency_key
LEFT JOIN webhooks_dispatch_outbox AS o
    ON n.id IS NULL AND k.id IS NULL AND o.endpoint_id = c.endpoint_id AND o.idempotency_key = c.idempotency_key
ORDER BY c.ord";

/// $1 message id → message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error.
pub const SELECT_ATTEMPTS: &str = "\
SELECT message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error
FROM webhooks_dispatch_attempts WHERE message_id = $1::text ORDER BY attempt_no";

/// $1 now → count of due pending messages that no drain holds (exactly what `CLAIM_DUE` would consider), and
/// the earliest next_attempt_at among them (for the age of the oldest waiting message). Per endpoint, over the
/// due range of the per-endpoint index only.
pub const QUEUE_STATS: &str = concat!(
    pending_endpoints!(),
    "
SELECT COALESCE(sum(d.due), 0)::int8, min(d.oldest) FROM pending_endpoints AS p
CROSS JOIN LATERAL (
    SELECT count(*) AS due, min(o.next_attempt_at) AS oldest FROM webhooks_dispatch_outbox AS o
    WHERE o.endpoint_id = p.endpoint_id AND o.status = 'pending' AND o.next_attempt_at <= $1::timestamptz
      AND (o.lease_expires_at IS NULL OR o.lease_expires_at <= $1::timestamptz)
) AS d
WHERE p.endpoint_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM webhooks_dispatch_endpoints AS d
                 WHERE d.id = p.endpoint_id AND (d.status = 'disabled' OR d.blocked_until > $1::timestamptz))"
);

/// Fans events out, all or nothing. Parallel arrays: $1 event ids, $2 owner ids, $3 event types, $4
/// payloads, $5 idempotency keys (NULL: none); $6 now → rows ordered by (ordinal, kind): per event one
/// `event` row (ordinal, 'event', event id, outcome, NULL) whose outcome is `created`, `existing` (the key
/// already names this same event), `conflict` (it names another), `refused` (another event of the batch
/// conflicts, so nothing was written) or `raced` (a concurrent commit holds the key, invisible to this
/// snapshot: read it back); then per message (ordinal, 'message', message id, endpoint id, NULL) and per
/// skipped endpoint (ordinal, 'skip', endpoint id, reason, disabled reason).
/// The owner's endpoints are found by the owner index; an event's payload is stored once, on the event, and
/// its messages store an empty payload (the claim reads the event's). Message ids are
/// `msg_<event ULID>_<endpoint ULID>`.
pub const INSERT_EVENTS: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        WITH ORDINALITY AS t(id, owner_id, event_type, payload, idempotency_key, ord)
), prior AS (
    SELECT i.ord, e.id, (e.event_type = i.event_type AND e.payload = i.payload) AS same
    FROM input AS i JOIN webhooks_dispatch_events AS e
        ON e.owner_id = i.owner_id AND e.idempotency_key = i.idempotency_key
), new_events AS (
    INSERT INTO webhooks_dispatch_events (id, owner_id, event_type, payload, idempotency_key, created_at)
    SELECT i.id, i.owner_id, i.event_type, i.payload, i.idempotency_key, $6::timestamptz
    FROM input AS i
    WHERE NOT EXISTS (SELECT 1 FROM prior AS p WHERE p.ord = i.ord)
      AND NOT EXISTS (SELECT 1 FROM prior AS p WHERE NOT p.same)
    ORDER BY i.ord
    ON CONFLICT (owner_id, idempotency_key) DO NOTHING
    RETURNING id
), targets AS (
    SELECT i.id AS event_id, i.event_type, ep.id AS endpoint_id, ep.status, ep.disabled_reason
    FROM input AS i
    JOIN new_events AS n ON n.id = i.id
    JOIN webhooks_dispatch_endpoints AS ep ON ep.owner_id = i.owner_id AND ep.deleted_at IS NULL
    WHERE cardinality(ep.event_types) = 0 OR i.event_type = ANY (ep.event_types)
), messages AS (
    INSERT INTO webhooks_dispatch_outbox
        (id, endpoint_id, event_type, payload, event_id, next_attempt_at, created_at, updated_at)
    SELECT 'msg_' || substr(t.event_id, 5) || '_' || substr(t.endpoint_id, 4), t.endpoint_id, t.event_type, '',
           t.event_id, $6::timestamptz, $6::timestamptz, $6::timestamptz
    FROM targets AS t WHERE t.status = 'active'
    ORDER BY t.event_id, t.endpoint_id
    RETURNING id, endpoint_id, event_id
), skips AS (
    INSERT INTO webhooks_dispatch_event_skips (event_id, endpoint_id, reason, disabled_reason)
    SELECT t.event_id, t.endpoint_id, 'endpoint_disabled', t.disabled_reason
    FROM targets AS t WHERE t.status <> 'active'
    RETURNING event_id, endpoint_id, reason, disabled_reason
)
SELECT i.ord, 'event', COALESCE(n.id, p.id, i.id),
       CASE WHEN n.id IS NOT NULL THEN 'created'
            WHEN p.id IS NOT NULL AND p.same THEN 'existing'
            WHEN p.id IS NOT NULL THEN 'conflict'
            WHEN EXISTS (SELECT 1 FROM prior AS c WHERE NOT c.same) THEN 'refused'
            ELSE 'raced' END,
       NULL::text
FROM input AS i LEFT JOIN new_events AS n ON n.id = i.id LEFT JOIN prior AS p ON p.ord = i.ord
UNION ALL
SELECT i.ord, 'message', m.id, m.endpoint_id, NULL::text FROM messages AS m JOIN input AS i ON i.id = m.event_id
UNION ALL
SELECT i.ord, 'skip', s.endpoint_id, s.reason, s.disabled_reason FROM skips AS s JOIN input AS i ON i.id = s.event_id
ORDER BY 1, 2, 3";

/// $1 owner id, $2 idempotency key → id, event_type, payload of the event holding that key.
pub const SELECT_EVENT_BY_KEY: &str = "\
SELECT id, event_type, payload FROM webhooks_dispatch_events
WHERE owner_id = $1::text AND idempotency_key = $2::text";

/// $1 event id → id, owner_id, event_type, payload, created_at.
pub const SELECT_EVENT: &str = "\
SELECT id, owner_id, event_type, payload, created_at FROM webhooks_dispatch_events WHERE id = $1::text";

/// $1 event id → where it went, by kind then endpoint: ('message', endpoint id, message id, NULL, NULL) and
/// ('skip', endpoint id, NULL, reason, disabled reason).
pub const SELECT_EVENT_TARGETS: &str = "\
SELECT 'message' AS kind, o.endpoint_id, o.id, NULL::text, NULL::text
FROM webhooks_dispatch_outbox AS o WHERE o.event_id = $1::text
UNION ALL
SELECT 'skip', s.endpoint_id, NULL::text, s.reason, s.disabled_reason
FROM webhooks_dispatch_event_skips AS s WHERE s.event_id = $1::text
ORDER BY 1, 2";

/// Extends the leases a worker still holds, so a healthy worker keeps its messages however long they wait
/// or take, while a dead one's expire one short lease after its last renewal. $1 message ids, $2 their lease
/// tokens, $3 the new expiry → (id, renewed) for each message still leased under its token and not final;
/// a message not in the result is no longer held (recorded, released, taken over after its lease expired, or
/// ended by its endpoint's deletion). Rows another statement has locked (the worker's own recorder completing
/// them, most likely) are skipped, never waited for, and come back with renewed = false: they are still held
/// as of this statement and are looked at again next time. Skipping is what keeps this from deadlocking
/// against a completion that locks the same rows in another order, and from ever slowing one down. Rows are
/// reached by id, never through the pending-only index (see `COMPLETE_ATTEMPTS`).
pub const RENEW_LEASES: &str = "\
WITH held AS (
    SELECT o.id, o.lease_token FROM unnest($1::text[], $2::text[]) AS r(id, lease_token)
    JOIN webhooks_dispatch_outbox AS o ON o.id = r.id AND o.lease_token = r.lease_token
    WHERE o.status NOT IN ('delivered', 'dead')
), free AS (
    -- Locked here, and the conditions re-checked on the latest row version, so the update below cannot
    -- extend a lease that changed hands since this statement's snapshot.
    SELECT o.id FROM held AS h JOIN webhooks_dispatch_outbox AS o ON o.id = h.id
    WHERE o.lease_token = h.lease_token AND o.status NOT IN ('delivered', 'dead')
    FOR UPDATE OF o SKIP LOCKED
), renewed AS (
    UPDATE webhooks_dispatch_outbox AS o SET lease_expires_at = $3::timestamptz
    WHERE o.id = ANY (ARRAY(SELECT f.id FROM free AS f))
    RETURNING o.id
)
SELECT h.id, r.id IS NOT NULL FROM held AS h LEFT JOIN renewed AS r ON r.id = h.id";

/// Endpoint lifecycle statements: disable, enable, update, delete, list.
mod endpoints;
/// Listing messages, newest first.
mod history;
/// Endpoint signing keys: rotation, expiry, listing, rekeying.
mod keys;
pub use endpoints::*;
pub use history::*;
pub use keys::*;

/// The PostgreSQL statement set.
pub const STATEMENTS: super::Statements = super::Statements {
    create_migrations_table: CREATE_MIGRATIONS_TABLE,
    select_migrations: SELECT_MIGRATIONS,
    migrations: MIGRATIONS,
    insert_endpoint: INSERT_ENDPOINT,
    select_endpoint: SELECT_ENDPOINT,
    insert_message: INSERT_MESSAGE,
    insert_messages: INSERT_MESSAGES,
    select_message_by_key: SELECT_MESSAGE_BY_KEY,
    select_message: SELECT_MESSAGE,
    claim_due: CLAIM_DUE,
    complete_attempts: COMPLETE_ATTEMPTS,
    release_claims: RELEASE_CLAIMS,
    next_due: NEXT_DUE,
    notify_due: Some(NOTIFY_DUE),
    listen_due: Some(LISTEN_DUE),
    connection_setup: None,
    select_attempts: SELECT_ATTEMPTS,
    queue_stats: QUEUE_STATS,
    disable_endpoint: DISABLE_ENDPOINT,
    enable_endpoint: ENABLE_ENDPOINT,
    update_endpoint: UPDATE_ENDPOINT,
    delete_endpoint: DELETE_ENDPOINT,
    insert_events: INSERT_EVENTS,
    select_event_by_key: SELECT_EVENT_BY_KEY,
    select_event: SELECT_EVENT,
    select_event_targets: SELECT_EVENT_TARGETS,
    list_endpoints: LIST_ENDPOINTS,
    list_owner_endpoints: LIST_OWNER_ENDPOINTS,
    list_messages: LIST_MESSAGES,
    list_endpoint_messages: LIST_ENDPOINT_MESSAGES,
    list_event_messages: LIST_EVENT_MESSAGES,
    renew_leases: RENEW_LEASES,
    rotate_key: ROTATE_KEY,
    expire_previous_keys: EXPIRE_PREVIOUS_KEYS,
    select_endpoint_keys: SELECT_ENDPOINT_KEYS,
    select_owner_keys: SELECT_OWNER_KEYS,
    select_keys_to_rekey: SELECT_KEYS_TO_REKEY,
    update_key_secrets: UPDATE_KEY_SECRETS,
};
