//! Every statement the core runs on PostgreSQL, in one place.
//!
//! Rules kept here: each statement touches only `webhooks_dispatch_*` tables; each parameter carries an
//! explicit cast so all drivers agree on its type; nothing is ever formatted into these strings.

/// The schema. Idempotent, and safe to run from several processes at once: a transaction-scoped advisory lock
/// serialises concurrent runs (plain `CREATE TABLE IF NOT EXISTS` races on the catalog). Sent as one
/// simple-query script, which PostgreSQL runs as a single implicit transaction.
pub const MIGRATE: &str = r#"
SELECT pg_advisory_xact_lock(7305546289152737061);

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
    ON webhooks_dispatch_outbox (next_attempt_at) WHERE status = 'pending';

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
"#;

/// $1 id, $2 owner_id, $3 url, $4 secret, $5 event_types, $6 created_at.
pub const INSERT_ENDPOINT: &str = "\
INSERT INTO webhooks_dispatch_endpoints (id, owner_id, url, secret, event_types, created_at)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text[], $6::timestamptz)";

/// $1 id → id, owner_id, url, event_types, created_at. Never selects the secret.
pub const SELECT_ENDPOINT: &str = "\
SELECT id, owner_id, url, event_types, created_at
FROM webhooks_dispatch_endpoints WHERE id = $1::text";

/// Checks the endpoint and subscription and inserts, in one round trip.
/// $1 message id, $2 endpoint_id, $3 event_type, $4 payload, $5 idempotency_key, $6 now
/// → found (int8), subscribed (bool, NULL when not found), inserted id (NULL on idempotency conflict).
/// `ON CONFLICT DO NOTHING` waits for a concurrent uncommitted insert of the same key, so two racing
/// dispatches still produce exactly one row.
pub const INSERT_MESSAGE: &str = "\
WITH ep AS (
    SELECT id, (cardinality(event_types) = 0 OR $3::text = ANY (event_types)) AS subscribed
    FROM webhooks_dispatch_endpoints WHERE id = $2::text
), ins AS (
    INSERT INTO webhooks_dispatch_outbox
        (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
    SELECT $1::text, ep.id, $3::text, $4::text, $5::text, $6::timestamptz, $6::timestamptz, $6::timestamptz
    FROM ep WHERE ep.subscribed
    ON CONFLICT (endpoint_id, idempotency_key) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM ep)::int8, (SELECT bool_or(subscribed) FROM ep), (SELECT id FROM ins)";

/// $1 endpoint_id, $2 idempotency_key → id. Runs after a conflict, in a new snapshot, so it sees the row a
/// concurrent transaction committed.
pub const SELECT_MESSAGE_BY_KEY: &str = "\
SELECT id FROM webhooks_dispatch_outbox WHERE endpoint_id = $1::text AND idempotency_key = $2::text";

/// $1 id → id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at.
pub const SELECT_MESSAGE: &str = "\
SELECT id, endpoint_id, event_type, status, attempts, next_attempt_at, created_at, updated_at
FROM webhooks_dispatch_outbox WHERE id = $1::text";

/// Claims up to $4 due messages for one drain by stamping them with a lease.
/// $1 lease token, $2 lease expiry, $3 now, $4 limit
/// → id, endpoint_id, payload, attempts, url, secret.
/// `FOR UPDATE SKIP LOCKED` lets concurrent drains take disjoint rows without waiting on each other; the lease
/// (not the row lock, which ends with this statement) is what keeps a second drain away during delivery.
pub const CLAIM_DUE: &str = "\
WITH due AS (
    SELECT id FROM webhooks_dispatch_outbox
    WHERE status = 'pending' AND next_attempt_at <= $3::timestamptz
      AND (lease_expires_at IS NULL OR lease_expires_at <= $3::timestamptz)
    ORDER BY next_attempt_at, id
    LIMIT $4::int8
    FOR UPDATE SKIP LOCKED
)
UPDATE webhooks_dispatch_outbox AS o
SET lease_token = $1::text, lease_expires_at = $2::timestamptz
FROM due, webhooks_dispatch_endpoints AS e
WHERE o.id = due.id AND e.id = o.endpoint_id
RETURNING o.id, o.endpoint_id, o.payload, o.attempts, e.url, e.secret";

/// Records one attempt and moves the message to its next state, atomically.
/// $1 message id, $2 lease token, $3 outcome ('delivered' | 'retrying' | 'dead'), $4 attempted_at,
/// $5 status_code, $6 latency_ms, $7 next_attempt_at (NULL unless retrying), $8 error → attempt_no.
/// Matching on the lease token refuses a stale drain whose lease expired and was re-claimed; matching on
/// status = 'pending' means a delivered or dead message never changes again. The attempt number comes from
/// the row itself and is unique per message by the primary key.
pub const COMPLETE_ATTEMPT: &str = "\
WITH done AS (
    UPDATE webhooks_dispatch_outbox
    SET status = CASE $3::text WHEN 'retrying' THEN 'pending' ELSE $3::text END,
        attempts = attempts + 1,
        next_attempt_at = COALESCE($7::timestamptz, next_attempt_at),
        lease_token = NULL, lease_expires_at = NULL, updated_at = $4::timestamptz
    WHERE id = $1::text AND lease_token = $2::text AND status = 'pending'
    RETURNING id, attempts
)
INSERT INTO webhooks_dispatch_attempts
    (message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error)
SELECT id, attempts, $4::timestamptz, $5::int4, $3::text, $6::int8, $7::timestamptz, $8::text FROM done
RETURNING attempt_no";

/// $1 message id → message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error.
pub const SELECT_ATTEMPTS: &str = "\
SELECT message_id, attempt_no, attempted_at, status_code, outcome, latency_ms, next_attempt_at, error
FROM webhooks_dispatch_attempts WHERE message_id = $1::text ORDER BY attempt_no";

/// Every statement, for the test that checks which tables they touch.
pub const ALL: &[&str] = &[
    MIGRATE,
    INSERT_ENDPOINT,
    SELECT_ENDPOINT,
    INSERT_MESSAGE,
    SELECT_MESSAGE_BY_KEY,
    SELECT_MESSAGE,
    CLAIM_DUE,
    COMPLETE_ATTEMPT,
    SELECT_ATTEMPTS,
];

#[cfg(test)]
mod tests {
    use super::ALL;

    /// Words and the punctuation that ends a FROM list, with comments removed.
    fn tokens(sql: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in sql.lines() {
            let code = line.split("--").next().unwrap_or("");
            let mut word = String::new();
            for c in code.chars() {
                if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
                    word.push(c);
                    continue;
                }
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                if matches!(c, '(' | ')' | ',' | ';') {
                    out.push(c.to_string());
                }
            }
            if !word.is_empty() {
                out.push(word);
            }
        }
        out
    }

    /// Names a statement reads or writes: what follows FROM (through comma lists) / JOIN / INTO / UPDATE /
    /// TABLE / REFERENCES, and an index's own name and table. Skips `IF NOT EXISTS` and aliases.
    fn relations(sql: &str) -> Vec<String> {
        let t = tokens(sql);
        let is = |i: usize, kw: &str| t.get(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
        let mut out = Vec::new();
        let mut i = 0;
        while i < t.len() {
            let kw = t[i].to_ascii_uppercase();
            let introduces = matches!(
                kw.as_str(),
                "FROM" | "JOIN" | "INTO" | "TABLE" | "REFERENCES" | "INDEX"
            ) || (kw == "UPDATE" && !(i > 0 && is(i - 1, "FOR")));
            if !introduces {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while is(j, "IF") || is(j, "NOT") || is(j, "EXISTS") {
                j += 1;
            }
            if t.get(j).is_some_and(|w| w == "(") {
                // A subquery, not a relation name.
                i = j;
                continue;
            }
            if let Some(name) = t.get(j) {
                out.push(name.clone());
            }
            j += 1;
            if kw == "INDEX" && is(j, "ON") {
                if let Some(table) = t.get(j + 1) {
                    out.push(table.clone());
                }
                j += 2;
            }
            if kw == "FROM" {
                loop {
                    // Optional alias, then maybe another relation after a comma.
                    if is(j, "AS") {
                        j += 2;
                    } else if t
                        .get(j)
                        .is_some_and(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                        && !matches!(
                            t[j].to_ascii_uppercase().as_str(),
                            "WHERE" | "JOIN" | "ORDER" | "LIMIT" | "GROUP" | "ON" | "FOR" | "RETURNING"
                        )
                    {
                        j += 1;
                    }
                    if t.get(j).is_some_and(|w| w == ",") && t.get(j + 1).is_some_and(|w| w != "(") {
                        out.push(t[j + 1].clone());
                        j += 2;
                        continue;
                    }
                    break;
                }
            }
            i = j;
        }
        out
    }

    /// Names defined by `WITH name AS (` / `, name AS (` in the statement itself.
    fn ctes(sql: &str) -> Vec<String> {
        let compact: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        compact
            .match_indices(" AS (")
            .filter_map(|(at, _)| compact[..at].rsplit([' ', ',']).next().map(str::to_owned))
            .collect()
    }

    #[test]
    fn invariant8_every_statement_touches_only_prefixed_tables() {
        let mut checked = 0;
        for sql in ALL {
            let local = ctes(sql);
            for name in relations(sql) {
                let ok = name.starts_with("webhooks_dispatch_") || local.contains(&name);
                assert!(ok, "statement touches `{name}`:\n{sql}");
                checked += 1;
            }
        }
        assert!(
            checked >= 20,
            "the scanner found too few relations ({checked}) to be trusted"
        );
    }

    #[test]
    fn invariant8_scanner_catches_foreign_tables() {
        let names = relations("SELECT a FROM webhooks_dispatch_x AS w, users u JOIN orders ON true");
        assert_eq!(names, ["webhooks_dispatch_x", "users", "orders"]);
        assert_eq!(relations("INSERT INTO audit (x) VALUES ($1)"), ["audit"]);
        assert_eq!(
            relations("CREATE INDEX IF NOT EXISTS i ON other (x)"),
            ["i", "other"]
        );
        assert_eq!(
            relations("SELECT (SELECT 1 FROM a), (SELECT 2 FROM b) FROM c, d"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(relations("SELECT id FROM q FOR UPDATE SKIP LOCKED"), ["q"]);
    }

    #[test]
    fn invariant8_parameters_are_numbered_and_typed() {
        for sql in ALL {
            // Each placeholder carries an explicit cast at least once, and they are numbered 1..=n with no gap,
            // so every driver binds the same types in the same order.
            let t = tokens(sql);
            let mut max = 0;
            for w in t.iter().filter(|w| w.starts_with('$')) {
                let n: usize = w[1..]
                    .parse()
                    .unwrap_or_else(|_| panic!("odd placeholder {w} in {sql}"));
                assert!(sql.contains(&format!("{w}::")), "{w} never cast in:\n{sql}");
                max = max.max(n);
            }
            for n in 1..=max {
                assert!(t.iter().any(|w| *w == format!("${n}")), "${n} unused in:\n{sql}");
            }
            assert!(
                !sql.contains("'$"),
                "a placeholder inside a string literal:\n{sql}"
            );
        }
    }
}
