//! # webhooks-dispatch
//!
//! Outbound webhooks through a transactional outbox. Your service registers its customers' endpoints and
//! enqueues events into an outbox table in **its own database** — inside its own transaction when it wants, so
//! an event commits or rolls back with the business write. Delivery happens out of band: every request is
//! signed per [Standard Webhooks](https://www.standardwebhooks.com/), retried with capped exponential backoff,
//! logged attempt by attempt, dead-lettered when exhausted, and never sent to a private address.
//!
//! ```no_run
//! # #[cfg(feature = "sqlx")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use webhooks_dispatch::{DeliverDue, Dispatcher, KeyRing, NewEndpoint, NewMessage};
//!
//! let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
//! // Endpoint secrets are sealed at rest under this master key ("id:base64 of 32 bytes").
//! let ring = KeyRing::parse(&std::env::var("WEBHOOKS_DISPATCH_MASTER_KEYS")?)?;
//! let dispatcher = Dispatcher::builder(pool).secret_cipher(Arc::new(ring)).build(); // no I/O, cannot fail
//! dispatcher.migrate().await?;
//!
//! let endpoint = dispatcher
//!     .register_endpoint(NewEndpoint::new("customer_42", "https://example.com/webhooks"))
//!     .await?;
//! if let Some(secret) = &endpoint.secret {
//!     println!("give this secret to the customer once: {}", secret.expose());
//! }
//!
//! let sent = dispatcher
//!     .dispatch(NewMessage::new(&endpoint.id, "invoice.paid", serde_json::json!({"invoice": 1})))
//!     .await?;
//!
//! // Elsewhere, in a loop or a background task:
//! let report = dispatcher.deliver_due(DeliverDue::default()).await?;
//! for attempt in dispatcher.list_attempts(&sent.message_id).await? {
//!     println!("{attempt:?}");
//! }
//! # let _ = report; Ok(()) }
//! ```
//!
//! ## Layout
//! - [`Dispatcher`] (`dispatcher`, `drain`, `config`): the API — register, dispatch, deliver, inspect.
//! - [`store`]: the SQL seam ([`store::Executor`]), PostgreSQL statements, and driver adapters behind the
//!   `sqlx` and `tokio-postgres` features. The default build links no database driver.
//! - [`signing`]: Standard Webhooks signatures, HMAC (`v1`) and ed25519 (`v1a`), and [`signing::verify`] and
//!   [`signing::verify_ed25519`] for receivers.
//! - [`retry`]: which results are retried and when.
//! - [`ssrf`]: address policy, URL rules and the resolver seam.
//! - [`keyring`]: endpoint secrets sealed at rest (XChaCha20-Poly1305) under rotatable master keys.
//! - `keys`: endpoint signing keys over their life: rotation, ed25519 public keys, the key set, rekeying.
//! - `delivery`: one hardened HTTPS attempt (pinned address, absolute deadline, bounded body) over a
//!   vetted-DNS cache and a keep-alive pool of HTTP/1.1 and HTTP/2 connections.

#![deny(missing_docs)]

mod attempt;
mod coalesce;
mod concurrency;
mod config;
mod delivery;
mod dispatcher;
mod drain;
mod endpoint;
mod enqueue;
pub mod error;
mod event;
mod headers;
mod history;
mod hold_back;
mod id;
pub mod keyring;
mod keys;
mod lifecycle;
mod message;
mod notify;
mod observe;
pub mod retry;
pub mod signing;
pub mod ssrf;
pub mod store;
mod worker;

pub use attempt::{Attempt, Outcome};
pub use config::{
    Clock, DispatcherBuilder, OnGone, SystemClock, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DISABLE_FAILING_AFTER, DEFAULT_DNS_CACHE_TTL,
    DEFAULT_MAX_IDLE_PER_DESTINATION, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_NOTIFY_DEBOUNCE,
    DEFAULT_PER_ENDPOINT_CONCURRENCY, DEFAULT_POOL_IDLE_TIMEOUT,
};
// The builder's new settings and the largest value of each setting (larger ones are clamped).
pub use config::{
    DEFAULT_CONCURRENT_LOOKUPS, DEFAULT_DNS_TIMEOUT, MAX_ATTEMPT_TIMEOUT, MAX_CONCURRENCY,
    MAX_CONCURRENT_LOOKUPS, MAX_DISABLE_FAILING_AFTER, MAX_DNS_CACHE_TTL, MAX_DNS_TIMEOUT,
    MAX_NOTIFY_DEBOUNCE, MAX_POOL_IDLE_TIMEOUT, MAX_RESPONSE_BODY_LIMIT,
};
pub use dispatcher::Dispatcher;
pub use drain::{DeliverDue, DeliveryReport, DEFAULT_BATCH, MAX_BATCH};
pub use endpoint::{
    DisabledReason, Endpoint, EndpointStatus, NewEndpoint, RegisteredEndpoint, MAX_DESCRIPTION_CHARS,
    MAX_EVENT_TYPES, MAX_EVENT_TYPE_CHARS, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS, MAX_OWNER_ID_CHARS, MAX_URL_CHARS,
};
pub use enqueue::MAX_DISPATCH_MANY;
pub use error::{DispatchError, StorageError, StorageErrorKind};
pub use event::{DispatchedEvent, Event, EventMessage, NewEvent, SkipReason, SkippedEndpoint};
pub use headers::{CustomHeaders, MAX_CUSTOM_HEADERS, MAX_HEADER_NAME_BYTES, MAX_HEADER_VALUE_BYTES};
pub use history::{ListMessages, MessagePage};
pub use hold_back::HoldBack;
pub use keyring::{CipherError, KeyRing, MasterKey, SecretCipher};
pub use keys::{
    EndpointKey, KeySet, PublishedKey, RekeyReport, RotateSecret, RotatedSecret, DEFAULT_REKEY_BATCH,
    DEFAULT_ROTATION_GRACE, MAX_ENDPOINT_KEYS, MAX_ROTATION_GRACE,
};
pub use lifecycle::{
    DeletedEndpoint, EndpointPage, ListEndpoints, UpdateEndpoint, DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT,
};
pub use message::{
    DeadReason, Dispatched, Message, MessageState, NewMessage, MAX_KEY_CHARS, MAX_PAYLOAD_BYTES,
};
pub use observe::{AttemptEvent, LifecycleEvent, NoopObserver, Observer, QueueStats};
pub use retry::RetryPolicy;
pub use signing::{verify, EndpointSecret, VerifyError};
// The ed25519 (`v1a`) keys, and signing with several keys at once.
pub use signing::{
    sign_all, verify_ed25519, Ed25519PublicKey, Ed25519SigningKey, SignatureScheme, SigningSecret,
};
pub use worker::{
    Worker, WorkerReport, DEFAULT_CLAIM_BATCH, DEFAULT_COOLDOWN, DEFAULT_LEASE, DEFAULT_POLL_INTERVAL,
    DEFAULT_SHUTDOWN_GRACE,
};

/// Re-exported so callers can build allowlists and root stores without adding the crates themselves.
pub use ipnet;
/// Re-exported for [`DispatcherBuilder::root_certificates`].
pub use rustls;

// Compiles the README's examples as doctests, so the quick start cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
