//! Integration tests: the real service on a real database, delivering to real HTTPS receivers on loopback.
//!
//! Engine-parametrized tests are written once as `async fn(Engine)` and instantiated per engine by
//! `engines!` (`postgres::…` and `sqlite::…`), each bounded by a timeout that names it. Nothing is sent
//! beyond 127.0.0.1.

mod db;
mod process;
mod support;

/// The HTTP API in-process on port 0: main path, authentication, errors, limits, idempotency, batches.
mod api;
/// The `webhooks-dispatch` binary as a child process: serve, endpoint add, send, attempts, verify, and
/// start-up refusals.
mod binary;
/// The key commands of the binary: `keys generate|add|rekey`, endpoint key rotation, `verify --public-key`.
mod cli_keys;
/// A `worker` process killed with SIGKILL mid-run: nothing lost or stuck, its messages back within 15 s.
mod crash;
/// Fan-out through `/v1/events`, and disabling and enabling endpoints.
mod events;
/// Listing what was sent through `GET /v1/messages`.
mod history;
/// The master key ring of the binary: SQLite's default key file, sealed rows, PostgreSQL's refusal.
mod keyring;
/// Signing keys through the API: rotation with overlap, expiry, ed25519 and the open key set.
mod keys;
/// The API server's limits: header read timeout, connection cap, request timeout, under a flood.
mod limits;
/// Lifecycle events as signed webhooks to the `operational_owner`, and the loop guard.
mod operational;
/// Probes, metrics and the OpenAPI document on a live server.
mod ops;
/// The database going away under a running server (through a proxy that cuts it) and coming back.
mod outage;
/// Invariant 7 on the service: the endpoint secret in no log line (at trace level), response or table.
mod secrets;
/// Separate API and worker processes, and graceful shutdown with deliveries in flight.
mod workers;
