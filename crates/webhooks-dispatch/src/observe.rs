//! Hooks for metrics: the library reports what happened; the application decides how to count it.
//!
//! An [`Observer`] is called synchronously on the delivery path, so implementations must be cheap and must not
//! block (increment counters, record a histogram sample). Events carry no secret and no payload.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::attempt::Outcome;
use crate::endpoint::DisabledReason;

/// One recorded delivery attempt, as reported to an [`Observer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptEvent<'a> {
    /// The message attempted.
    pub message_id: &'a str,
    /// Its endpoint.
    pub endpoint_id: &'a str,
    /// 1-based attempt number.
    pub attempt_no: u32,
    /// HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// What the attempt led to.
    pub outcome: Outcome,
    /// Time from attempt start to response head or failure.
    pub latency: Duration,
}

/// A change in an endpoint's or a message's life, as reported to [`Observer::lifecycle`]: what an operator
/// wants to hear about (the service turns these into operational webhooks).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleEvent<'a> {
    /// An endpoint was registered.
    EndpointCreated {
        /// The new endpoint.
        endpoint_id: &'a str,
        /// Its owner.
        owner_id: &'a str,
    },
    /// An endpoint's URL, event types, description, metadata or headers changed.
    EndpointUpdated {
        /// The endpoint.
        endpoint_id: &'a str,
        /// Its owner.
        owner_id: &'a str,
    },
    /// An active endpoint was disabled: by hand, because its receiver answered `410 Gone`, or because it
    /// kept failing.
    EndpointDisabled {
        /// The endpoint.
        endpoint_id: &'a str,
        /// Its owner.
        owner_id: &'a str,
        /// Why.
        reason: DisabledReason,
    },
    /// A disabled endpoint was enabled again.
    EndpointEnabled {
        /// The endpoint.
        endpoint_id: &'a str,
        /// Its owner.
        owner_id: &'a str,
    },
    /// An endpoint was deleted; its pending messages ended.
    EndpointDeleted {
        /// The endpoint.
        endpoint_id: &'a str,
        /// Its owner.
        owner_id: &'a str,
    },
    /// A message's attempts ended without a delivery (exhausted, or a permanent failure).
    MessageDead {
        /// The message.
        message_id: &'a str,
        /// Its endpoint.
        endpoint_id: &'a str,
        /// Attempts made.
        attempts: u32,
    },
}

/// Receives events for metrics. Every method has a no-op default.
pub trait Observer: Send + Sync + 'static {
    /// `created` new messages were enqueued (idempotent replays are not counted).
    fn dispatched(&self, created: usize) {
        let _ = created;
    }

    /// An attempt was recorded (only results that were written; a stale drain's discarded result is not).
    fn attempt(&self, event: &AttemptEvent<'_>) {
        let _ = event;
    }

    /// An endpoint or message changed state. Reported after the change was written (through a
    /// transaction's executor, before that transaction commits).
    fn lifecycle(&self, event: &LifecycleEvent<'_>) {
        let _ = event;
    }
}

/// The default observer: ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

/// The backlog, for a queue-depth gauge and an oldest-due-message age gauge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Pending messages due now and not held by any drain or worker.
    pub due: u64,
    /// When the oldest of them became due.
    pub oldest_due_at: Option<DateTime<Utc>>,
}
