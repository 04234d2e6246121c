//! Prometheus metrics for `/metrics` (text format 0.0.4).
//!
//! | metric | type | source |
//! |---|---|---|
//! | `webhooks_dispatch_messages_dispatched_total` | counter | messages created by this process (idempotent replays excluded) |
//! | `webhooks_dispatch_attempts_total{outcome}` | counter | attempts recorded by this process, by outcome: `delivered`, `retrying`, `dead` |
//! | `webhooks_dispatch_attempt_duration_seconds` | histogram | attempt latency (start to response head or failure) |
//! | `webhooks_dispatch_due_messages` | gauge | due, unleased pending messages (the backlog), counted at most once per `metrics_refresh` |
//! | `webhooks_dispatch_oldest_due_age_seconds` | gauge | how long the oldest of them has been due (0 when none), as of that count |
//! | `webhooks_dispatch_queue_stats_errors_total` | counter | backlog reads that failed (gauges then keep their last value) |
//! | `webhooks_dispatch_operational_events_dropped_total` | counter | lifecycle events not sent as operational webhooks because their queue was full |
//! | `webhooks_dispatch_api_connections_shed_total` | counter | API connections closed on arrival because `max_connections` were open |
//!
//! Counters come from the library's [`Observer`] hook (the dispatcher reports every created message and every
//! *recorded* attempt, with no secret or payload); the backlog gauges from `Dispatcher::queue_stats`, a
//! `count(*)` over the due backlog. That read is what a scrape costs the database, so it runs at most once per
//! refresh interval (default 5 s): scrapes in between, and scrapes waiting on the one in progress, are served
//! from its result. However often `/metrics` is hit, the database sees one backlog read per interval.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

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

/// Default longest time between two backlog reads (`metrics_refresh`).
pub const DEFAULT_BACKLOG_REFRESH: Duration = Duration::from_secs(5);

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
    /// Longest time between two backlog reads.
    refresh: Duration,
    /// The last backlog read. Held across the read, so concurrent scrapes wait for one read instead of
    /// each running their own, and none reports one read's count with another's age.
    backlog: tokio::sync::Mutex<Backlog>,
}

/// When the backlog was last read, and the oldest due message it found.
#[derive(Default)]
struct Backlog {
    read_at: Option<Instant>,
    oldest_due_at: Option<DateTime<Utc>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered, reading the backlog at most every
    /// [`DEFAULT_BACKLOG_REFRESH`].
    pub fn new() -> Self {
        Self::with_backlog_refresh(DEFAULT_BACKLOG_REFRESH)
    }

    /// A registry with every metric registered, reading the backlog at most once per `refresh`.
    pub fn with_backlog_refresh(refresh: Duration) -> Self {
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
            refresh,
            backlog: tokio::sync::Mutex::new(Backlog::default()),
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

    /// Renders every metric, reading the backlog first if the last read is older than the refresh
    /// interval. A failed backlog read is counted and logged, not returned: the counters matter most exactly
    /// when the database is in trouble. It still counts as a read, so a database in trouble is not asked again
    /// by every scrape.
    pub async fn render<E: Executor>(&self, dispatcher: &Dispatcher<E>) -> String {
        let mut backlog = self.backlog.lock().await;
        if backlog.read_at.is_none_or(|at| at.elapsed() >= self.refresh) {
            backlog.read_at = Some(Instant::now());
            match dispatcher.queue_stats(Some(Utc::now())).await {
                Ok(stats) => {
                    self.due.set(i64::try_from(stats.due).unwrap_or(i64::MAX));
                    backlog.oldest_due_at = stats.oldest_due_at;
                }
                Err(e) => {
                    self.stats_errors.inc();
                    tracing::warn!(error = %e, "could not read the backlog for /metrics");
                }
            }
        }
        // The age keeps growing between reads, as the oldest message's wait does while nothing delivers it.
        let age = backlog
            .oldest_due_at
            .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.oldest_due_age.set(age);
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use webhooks_dispatch::store::rusqlite::SqliteExecutor;
    use webhooks_dispatch::store::{BoxFuture, Row, Statements, Value};
    use webhooks_dispatch::{Outcome, StorageError};

    /// SQLite in memory, counting the backlog statements it runs.
    struct CountingStats {
        inner: SqliteExecutor,
        stats: AtomicUsize,
    }

    impl Executor for CountingStats {
        fn statements(&self) -> &'static Statements {
            self.inner.statements()
        }

        fn query<'a>(
            &'a self,
            sql: &'static str,
            params: &'a [Value],
        ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
            if sql == self.statements().queue_stats {
                self.stats.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.query(sql, params)
        }

        fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
            self.inner.batch_execute(sql)
        }
    }

    async fn counted() -> (Arc<CountingStats>, Arc<Dispatcher<Arc<CountingStats>>>) {
        let exec = Arc::new(CountingStats {
            inner: SqliteExecutor::open_in_memory().expect("sqlite"),
            stats: AtomicUsize::new(0),
        });
        let dispatcher = Dispatcher::new(exec.clone());
        dispatcher.migrate().await.expect("migrate");
        (exec, Arc::new(dispatcher))
    }

    // Catches: every scrape of the open /metrics running the backlog count(*), so a scraper (or anyone
    // hammering the endpoint) sets the database's load; and concurrent scrapes each running their own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_within_the_refresh_window_share_one_backlog_read() {
        let (exec, dispatcher) = counted().await;
        let metrics = Arc::new(Metrics::new());
        let scrapes: Vec<_> = (0..20)
            .map(|_| {
                let (metrics, dispatcher) = (metrics.clone(), dispatcher.clone());
                tokio::spawn(async move { metrics.render(&*dispatcher).await })
            })
            .collect();
        for scrape in scrapes {
            assert!(scrape
                .await
                .expect("scrape")
                .contains("webhooks_dispatch_due_messages 0"));
        }
        for _ in 0..5 {
            metrics.render(&*dispatcher).await;
        }
        assert_eq!(exec.stats.load(Ordering::SeqCst), 1);
    }

    // Catches: a cache that never refreshes (stale gauges forever), and an age frozen at the last read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_backlog_is_read_again_once_the_refresh_interval_has_passed() {
        let (exec, dispatcher) = counted().await;
        let metrics = Metrics::with_backlog_refresh(Duration::from_millis(100));
        metrics.render(&*dispatcher).await;
        metrics.render(&*dispatcher).await;
        assert_eq!(exec.stats.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        metrics.render(&*dispatcher).await;
        assert_eq!(exec.stats.load(Ordering::SeqCst), 2);
        // An oldest due message read once still ages at every scrape.
        metrics.backlog.lock().await.oldest_due_at = Some(Utc::now() - chrono::Duration::seconds(30));
        let text = metrics.render(&*dispatcher).await;
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("webhooks_dispatch_oldest_due_age_seconds "))
            .and_then(|v| v.parse().ok())
            .expect("the age gauge");
        assert!(age >= 30.0, "{age}");
    }

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
