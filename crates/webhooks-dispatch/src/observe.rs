//! Hooks for metrics: the library reports what happened; the application decides how to count it.
//!
//! An [`Observer`] is called synchronously on the delivery path, so implementations must be cheap and must not
//! block (increment counters, record a histogram sample). Events carry no secret and no payload.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::attempt::Outcome;

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
