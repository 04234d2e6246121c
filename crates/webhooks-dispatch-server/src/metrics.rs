//! Prometheus metrics for `/metrics` (text format 0.0.4).
//!
//! | metric | type | source |
//! |---|---|---|
//! | `webhooks_dispatch_messages_dispatched_total` | counter | messages created through this server's API (idempotent replays excluded) |
//! | `webhooks_dispatch_attempts_total{outcome}` | counter | recorded attempts by outcome: `delivered`, `retrying`, `dead` |
//! | `webhooks_dispatch_attempt_duration_seconds` | histogram | attempt latency (start to response head or failure) |
//! | `webhooks_dispatch_due_messages` | gauge | due, unleased pending messages (the backlog), read at scrape time |
//! | `webhooks_dispatch_oldest_due_age_seconds` | gauge | how long the oldest of them has been due (0 when none) |
//! | `webhooks_dispatch_queue_stats_errors_total` | counter | scrapes whose backlog read failed (gauges then keep their last value) |
//!
//! Attempt outcomes come from the library's `webhook attempt` tracing event, which it emits once per
//! *recorded* attempt, through [`AttemptLayer`]. The library has no outcome callback yet, and counting from
//! the attempt table would cost a query per scrape and miss nothing only by luck; the event is exact. The
//! consequence: these counters are process-wide (a tracing subscriber is global) and count only while the
//! layer is installed — [`crate::logging::init`] installs it, with its own filter, so `RUST_LOG` cannot
//! switch metrics off.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::database::{self, Database};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The library's per-attempt event message, and the outcome strings it records.
const ATTEMPT_EVENT: &str = "webhook attempt";
const OUTCOMES: [&str; 3] = ["delivered", "retrying", "dead"];

type OutcomeLabel = [(&'static str, &'static str); 1];

/// Process-wide attempt metrics, fed by [`AttemptLayer`].
struct AttemptMetrics {
    attempts: Family<OutcomeLabel, Counter>,
    latency: Histogram,
}

static ATTEMPTS: LazyLock<AttemptMetrics> = LazyLock::new(|| {
    let attempts = Family::<OutcomeLabel, Counter>::default();
    // Created up front so every outcome is exported from the first scrape, at 0.
    for outcome in OUTCOMES {
        let _ = attempts.get_or_create(&[("outcome", outcome)]);
    }
    AttemptMetrics {
        attempts,
        latency: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
    }
});

/// One server's metrics registry: its own dispatch counter and backlog gauges, plus the process-wide
/// attempt metrics.
pub struct Metrics {
    registry: Registry,
    dispatched: Counter,
    due: Gauge,
    oldest_due_age: Gauge<f64, AtomicU64>,
    stats_errors: Counter,
    /// Serializes "read the backlog, set the gauges, encode" so two concurrent scrapes cannot interleave
    /// and report one scrape's count with the other's age.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("webhooks_dispatch");
        let dispatched = Counter::default();
        let due = Gauge::default();
        let oldest_due_age = Gauge::<f64, AtomicU64>::default();
        let stats_errors = Counter::default();
        registry.register(
            "messages_dispatched",
            "Messages created through this server's API (idempotent replays excluded)",
            dispatched.clone(),
        );
        registry.register(
            "attempts",
            "Recorded delivery attempts by outcome, in this process",
            ATTEMPTS.attempts.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Delivery attempt latency: start to response head or failure",
            ATTEMPTS.latency.clone(),
        );
        registry.register(
            "due_messages",
            "Pending messages that are due and not being attempted",
            due.clone(),
        );
        registry.register(
            "oldest_due_age_seconds",
            "Seconds since the oldest due message became due (0 when none is)",
            oldest_due_age.clone(),
        );
        registry.register(
            "queue_stats_errors",
            "Scrapes whose backlog read failed; the backlog gauges then keep their last value",
            stats_errors.clone(),
        );
        Metrics {
            registry,
            dispatched,
            due,
            oldest_due_age,
            stats_errors,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts messages created by the API.
    pub fn dispatched(&self, n: u64) {
        self.dispatched.inc_by(n);
    }

    /// Reads the backlog and renders every metric. A failed backlog read is counted and logged, not
    /// returned: the counters matter most exactly when the database is in trouble.
    pub async fn render(&self, db: &Database) -> String {
        let _one_at_a_time = self.scrape.lock().await;
        let now = chrono::Utc::now();
        match database::queue_stats(db, now).await {
            Ok(stats) => {
                self.due.set(stats.due);
                let age = stats
                    .oldest_due_at
                    .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                    .unwrap_or(0.0);
                self.oldest_due_age.set(age);
            }
            Err(e) => {
                self.stats_errors.inc();
                tracing::warn!(error = %e, "could not read the backlog for /metrics");
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// A tracing layer that counts the library's `webhook attempt` events into the attempt metrics. Install it
/// with a filter of its own (see [`crate::logging`]) so log filtering does not change what is counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttemptLayer;

impl<S: Subscriber> Layer<S> for AttemptLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !target.starts_with("webhooks_dispatch::") {
            return;
        }
        let mut seen = AttemptFields::default();
        event.record(&mut seen);
        if !seen.is_attempt {
            return;
        }
        if let Some(outcome) = OUTCOMES.iter().find(|o| Some(**o) == seen.outcome.as_deref()) {
            ATTEMPTS.attempts.get_or_create(&[("outcome", outcome)]).inc();
        }
        if let Some(ms) = seen.latency_ms {
            ATTEMPTS.latency.observe(ms as f64 / 1000.0);
        }
    }
}

#[derive(Default)]
struct AttemptFields {
    is_attempt: bool,
    outcome: Option<String>,
    latency_ms: Option<i64>,
}

impl Visit for AttemptFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "outcome" {
            self.outcome = Some(value.to_owned());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "latency_ms" {
            self.latency_ms = Some(value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.is_attempt = format!("{value:?}") == ATTEMPT_EVENT;
        }
    }
}

/// Shared handle used by the API state.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn attempt_events_are_counted_by_outcome() {
        let before = ATTEMPTS.attempts.get_or_create(&[("outcome", "dead")]).get();
        let subscriber = tracing_subscriber::registry().with(AttemptLayer);
        tracing::subscriber::with_default(subscriber, || {
            // Same shape as the library's event; the target must look like the library's.
            tracing::info!(target: "webhooks_dispatch::drain", message_id = "msg_1", outcome = "dead",
                latency_ms = 12i64, "webhook attempt");
            tracing::info!(target: "webhooks_dispatch::drain", outcome = "dead", "something else");
            tracing::info!(target: "other", outcome = "dead", "webhook attempt");
        });
        let after = ATTEMPTS.attempts.get_or_create(&[("outcome", "dead")]).get();
        assert_eq!(after - before, 1);
    }
}
