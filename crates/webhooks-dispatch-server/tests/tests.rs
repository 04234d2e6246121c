//! Integration tests: the real service on a real database, delivering to real HTTPS receivers on loopback.
//!
//! Engine-parametrized tests are written once as `async fn(Engine)` and instantiated per engine by
//! `engines!` (`postgres::…` today). Nothing is sent beyond 127.0.0.1.

mod support;

/// The HTTP API in-process on port 0: main path, authentication, errors, limits, idempotency, batches.
mod api;
/// The `webhooks-dispatch` binary as a child process: serve, endpoint add, send, attempts, verify.
mod binary;
/// Probes, metrics and the OpenAPI document on a live server.
mod ops;
