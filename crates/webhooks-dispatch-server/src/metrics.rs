//! Prometheus metrics for `/metrics` (text format 0.0.4).
//!
//! | metric | type | source |
//! |---|---|---|
//! | `webhooks_dispatch_messages_dispatched_total` | counter | messages created by this process (idempotent replays excluded) |
//! | `webhooks_dispatch_attempts_total{outcome}` | counter | attempts recorded by this process, by outcome: `delivered`, `retrying`, `dead` |
//! | `webhooks_dispatch_attempt_duration_seconds` | histogram | attempt latency (start to response head or failure) |
//! | `webhooks_dispatch_due_messages` | gauge | due, unleased pending messages (the backlog), read at scrape time |
//! | `webhooks_dispatch_oldest_due_age_seconds` | gauge | how long the oldest of them has been due (0 when none) |
//! | `webhooks_dispatch_queue_stats_errors_total` | counter | scrapes whose backlog read failed (gauges then keep their last value) |
//! | `webhooks_dispatch_operational_events_dropped_total` | counter | lifecycle events not sent as operational webhooks because their queue was full |
//! | `webhooks_dispatch_api_connections_shed_total` | counter | API connections closed on arrival because `max_connections` were open |
//!
//! Counters come from the library's [`Observer`] hook (the dispatcher reports every created message and every
//! *recorded* attempt, with no secret or payload); the backlog gauges from `Dispatcher::queue_stats`, read at
//! scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{AttemptEvent, Dispatcher, Observer};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const OUTCOMES: [&str; 3] = ["delivered", "retrying", "dead"];

type OutcomeLabel = [(&'static str, &'static str); 1];

/// One service's metrics: fed by its dispatcher (as its [`Observer`]) and read at each scrape.
pub struct Metrics {
    registry: Registry,
    dispatched: Counter,
    attempts: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    due: Gauge,
    oldest_due_age: Gauge<f64, AtomicU64>,
    stats_errors: Counter,
    operational_dropped: Counter,
    connections_shed: Counter,
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
        let operational_dropped = Counter::default();
        let connections_shed = Counter::default();
        let attempts = Family::<OutcomeLabel, Counter>::default();
        // Created up front so every outcome is exported from the first scrape, at 0.
        for outcome in OUTCOMES {
            let _ = attempts.get_or_create(&[("outcome", outcome)]);
        }
        let latency = Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "messages_dispatched",
            "Messages created by this process (idempotent replays excluded)",
            dispatched.clone(),
        );
        registry.register(
            "attempts",
            "Delivery attempts recorded by this process, by outcome",
            attempts.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Delivery attempt latency: start to response head or failure",
            latency.clone(),
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
        registry.register(
            "operational_events_dropped",
            "Lifecycle events not sent as operational webhooks because their queue was full",
            operational_dropped.clone(),
        );
        registry.register(
            "api_connections_shed",
            "API connections closed on arrival because max_connections were already open",
            connections_shed.clone(),
        );
        Metrics {
            registry,
            dispatched,
            attempts,
            latency,
            due,
            oldest_due_age,
            stats_errors,
            operational_dropped,
            connections_shed,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// The counter of API connections shed at the cap, for the accept loop to increment.
    pub fn connections_shed(&self) -> Counter {
        self.connections_shed.clone()
    }

    /// The counter of dropped operational events, for the forwarder to increment.
    pub fn operational_dropped(&self) -> Counter {
        self.operational_dropped.clone()
    }

    /// Reads the backlog and renders every metric. A failed backlog read is counted and logged, not
    /// returned: the counters matter most exactly when the database is in trouble.
    pub async fn render<E: Executor>(&self, dispatcher: &Dispatcher<E>) -> String {
        let _one_at_a_time = self.scrape.lock().await;
        let now = chrono::Utc::now();
        match dispatcher.queue_stats(Some(now)).await {
            Ok(stats) => {
                self.due.set(i64::try_from(stats.due).unwrap_or(i64::MAX));
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

impl Observer for Metrics {
    fn dispatched(&self, created: usize) {
        self.dispatched.inc_by(u64::try_from(created).unwrap_or(u64::MAX));
    }

    fn attempt(&self, event: &AttemptEvent<'_>) {
        self.attempts
            .get_or_create(&[("outcome", event.outcome.as_str())])
            .inc();
        self.latency.observe(event.latency.as_secs_f64());
    }
}

/// Shared handle used by the API state.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use webhooks_dispatch::Outcome;

    #[test]
    fn observed_events_are_counted_by_outcome() {
        let m = Metrics::new();
        m.dispatched(2);
        let event = AttemptEvent {
            message_id: "msg_1",
            endpoint_id: "ep_1",
            attempt_no: 1,
            status_code: Some(500),
            outcome: Outcome::Dead,
            latency: std::time::Duration::from_millis(12),
        };
        m.attempt(&event);
        assert_eq!(m.attempts.get_or_create(&[("outcome", "dead")]).get(), 1);
        assert_eq!(m.attempts.get_or_create(&[("outcome", "delivered")]).get(), 0);
        assert_eq!(m.dispatched.get(), 2);
    }
}
