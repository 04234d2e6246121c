//! # webhooks-dispatch-server
//!
//! The standalone service around the `webhooks-dispatch` library: an HTTP API to register endpoints and
//! enqueue messages, the delivery worker, and a CLI — one binary, `webhooks-dispatch`.
//!
//! ```text
//! webhooks-dispatch serve  --database-url postgres://… --api-key $KEY   # API on 127.0.0.1:8080 + worker
//! webhooks-dispatch worker --database-url postgres://…                  # more delivery capacity
//! webhooks-dispatch endpoint add --owner acme --url https://acme.example/hooks
//! webhooks-dispatch send --endpoint ep_… --type invoice.paid --data '{"invoice": 7}'
//! webhooks-dispatch attempts msg_…
//! webhooks-dispatch endpoint rotate-secret ep_… --grace 24h               # old and new secret both sign
//! ```
//!
//! ## Layout
//! - [`cli`]: argument parsing and the client commands; the binary (`src/main.rs`) only calls [`cli::run`].
//! - [`config`]: settings in two stages, raw (flags > env > file) then resolved and validated; the master
//!   key ring that seals endpoint secrets at rest ([`config::keyring`]).
//! - [`server`]: [`run`] (API + worker on a bound listener until a shutdown future completes),
//!   [`run_worker`], migration, and configuration → `Dispatcher`/`Worker` wiring.
//! - [`database`]: the one place that picks the storage engine from the URL.
//! - [`api`]: routes (one table, also checked against the OpenAPI document), handlers, JSON errors.
//! - [`auth`]: bearer API keys, compared in constant time.
//! - [`metrics`]: Prometheus registry, and the tracing layer that counts attempt outcomes.
//! - [`operational`]: lifecycle events sent as webhooks to the `operational_owner` (endpoint.disabled, …).
//! - [`openapi`]: the hand-written OpenAPI 3.1 document.
//! - [`logging`]: the tracing subscriber (human or JSON).

#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod database;
mod error;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod operational;
mod private_file;
pub mod server;

pub use config::Config;
pub use error::Error;
pub use server::{run, run_worker};
