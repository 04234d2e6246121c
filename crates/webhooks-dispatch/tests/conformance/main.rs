//! The conformance suite: every test runs against every storage engine, on a real PostgreSQL (a throwaway
//! cluster unless `DATABASE_URL` is set), delivering to real HTTPS receivers on loopback.
//!
//! Test names carry the invariant they prove (`invariant1_…` … `invariant8_…`).

mod support;

/// Batch enqueue: `dispatch_many`.
mod batch;
/// Endpoint-driven claims: oldest endpoints first, claim-ahead only for endpoints that keep up.
mod claims;
/// Invariant 6 and hostile endpoints: SSRF policy, pinning, rebinding, deadlines.
mod destinations;
/// Fan-out of an owner's events, and disabled endpoints.
mod events;
/// Fairness: failing endpoints held back, per-owner and per-host caps against tarpits.
mod fairness;
/// Storage failures under delivery: failed claims and recordings, a lost LISTEN connection.
mod faults;
/// Settings that cannot panic, refused control characters, normalized URLs, bounded lookups, HTTP/2 windows.
mod hardening;
/// What was sent: listing messages by endpoint, event, state and time, newest first, a page at a time.
mod history;
/// Signing keys: rotation, ed25519, the key set, encryption at rest and rekeying.
mod keys;
/// Short worker leases kept alive by renewal: slow attempts never taken over, a crashed worker's taken within
/// about one lease.
mod leases;
/// Updating and deleting endpoints, custom headers, automatic disabling, lifecycle events.
mod lifecycle;
/// Numbered schema migrations: upgrades in place with rows intact, concurrency, refusing newer schemas.
mod migrations;
/// Invariants 2, 5, 8 and the outbox schema: enqueue writes rows and nothing else.
mod outbox;
/// PostgreSQL plans that must hold whatever the planner's statistics say.
mod plans;
/// Connection reuse, HTTP/2, the vetted DNS cache, and invariant 6 with pooled connections.
mod pooling;
/// Invariant 4: retry, backoff, Retry-After, permanent failures, dead-letter.
mod retries;
/// Concurrent drains, leases, the continuous worker, per-endpoint caps.
mod scale;
/// Invariant 7: the secret is shown once and never again.
mod secrets;
/// Invariant 3: real deliveries carry valid Standard Webhooks signatures.
mod signatures;
/// Enqueue inside the caller's own transaction, per adapter.
mod transactions;
/// Invariant 1: construction does no I/O; validation precedes SQL; storage errors are typed and opaque.
mod validation;
