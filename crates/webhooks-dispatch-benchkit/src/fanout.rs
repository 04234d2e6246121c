//! Scenario 11: fan-out. One owner's event becomes one message per endpoint of that owner, in one statement,
//! with the payload stored once on the event. Two questions, for an owner with 1, 10, 100 and 1,000 endpoints:
//!
//! - What does an event cost to enqueue? `dispatch_event` is timed call by call, one after another on a fresh
//!   database, each call alternating with the same-run baseline: `dispatch_many` of the same messages (one per
//!   endpoint, same payload) in one call, which is what a caller enqueueing the messages itself would do.
//!   Alternating means both see the same table size and the same neighbours.
//! - How fast are the fan-out messages delivered? About N messages (N ÷ endpoints events) go through the
//!   delivery measurement of scenario 2, enqueued by events instead of messages; on top of scenario 2's
//!   checks, every endpoint must have received every event's payload exactly once.
//!
//! Every round measures each endpoint count once, both ways, so the rounds interleave; the best round counts
//! (lowest median for the enqueue times, highest rate for delivery).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sqlx::Row as _;
use webhooks_dispatch::{Dispatcher, NewEvent, NewMessage};
use webhooks_dispatch_testkit::receiver::Receiver;

use crate::delivery::{self, Plan};
use crate::env::{chain, endpoint_url, payload, register_owned_endpoints, Env, Result, Tuning};
use crate::env::{EVENT_OWNER, EVENT_TYPE};
use crate::latency::percentile;
use crate::report::{Report, Samples};

const SCENARIO: &str = "11. fan-out";
/// Endpoints of the one owner, per measurement.
pub const ENDPOINT_COUNTS: [usize; 4] = [1, 10, 100, 1_000];
/// Untimed call pairs before the clock starts, so connection setup and statement preparation are not counted.
const WARM_UP: usize = 3;

/// Events timed one by one at `endpoints` endpoints: many where a call is cheap, so the p99 means something;
/// few where each call writes 1,000 rows, so the scenario stays short.
pub fn timed_events(endpoints: usize) -> usize {
    match endpoints {
        0..=10 => 200,
        11..=100 => 100,
        _ => 20,
    }
}

/// Events for the delivery measurement: about `messages` messages in all, and at least one event.
pub fn delivery_events(messages: usize, endpoints: usize) -> usize {
    (messages / endpoints.max(1)).max(1)
}

/// One round's enqueue times at one endpoint count, each sorted.
#[derive(Debug, Default)]
struct Timings {
    /// `dispatch_event`, one event to every endpoint.
    events: Vec<Duration>,
    /// `dispatch_many` of the same messages, one per endpoint.
    many: Vec<Duration>,
}

impl Timings {
    /// The figure rounds are compared by: the median `dispatch_event` time.
    fn median(&self) -> Duration {
        percentile(&self.events, 50.0)
    }
}

/// The rounds of one endpoint count's enqueue measurement.
#[derive(Debug, Default)]
struct EnqueueRounds {
    /// The rounds that succeeded.
    ok: Vec<Timings>,
    /// Why the others failed.
    errors: Vec<String>,
}

impl EnqueueRounds {
    /// Adds one round's outcome.
    fn push(&mut self, round: Result<Timings>) {
        match round {
            Ok(t) => self.ok.push(t),
            Err(e) => self.errors.push(chain(&*e)),
        }
    }

    /// Other tenants of the machine can only slow a call down, so the round with the lowest median counts.
    fn best(&self) -> Option<&Timings> {
        self.ok.iter().min_by_key(|t| t.median())
    }
}

/// Runs both measurements at every endpoint count, interleaved `rounds` times, and adds their figures.
pub async fn scenario(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize, rounds: usize) {
    let mut enqueue = ENDPOINT_COUNTS.map(|_| EnqueueRounds::default());
    let mut delivered = ENDPOINT_COUNTS.map(|_| Samples::default());
    for _ in 0..rounds {
        for (i, &endpoints) in ENDPOINT_COUNTS.iter().enumerate() {
            enqueue[i].push(time_enqueue(env, endpoints).await);
            let plan = Plan::fan_out("fanout", endpoints, delivery_events(messages, endpoints));
            delivered[i].push(delivery::run(env, tuning, &plan).await);
        }
    }
    for (&endpoints, rounds) in ENDPOINT_COUNTS.iter().zip(&enqueue) {
        report_enqueue(report, endpoints, rounds);
    }
    for (&endpoints, samples) in ENDPOINT_COUNTS.iter().zip(&delivered) {
        report_delivery(
            report,
            tuning,
            endpoints,
            delivery_events(messages, endpoints),
            samples,
        );
    }
}

/// One round of the enqueue measurement on a fresh database: `dispatch_event` and `dispatch_many` of the
/// same messages, alternating, one call at a time.
async fn time_enqueue(env: &Env, endpoints: usize) -> Result<Timings> {
    let db = env.fresh_database("fanout_enqueue").await?;
    let pool = env.pool(&db, 2, false).await?;
    let d = env.builder(pool.clone()).build();
    d.migrate().await?;
    // The endpoints exist (the fan-out reads them) but are never delivered to here.
    let urls: Vec<String> = (0..endpoints).map(|i| endpoint_url(443, i)).collect();
    let ids = register_owned_endpoints(&d, EVENT_OWNER, &urls).await?;

    let calls = WARM_UP + timed_events(endpoints);
    let mut timings = Timings::default();
    for k in 0..calls {
        let (event, many) = time_pair(&d, &ids, k as u64).await?;
        if k >= WARM_UP {
            timings.events.push(event);
            timings.many.push(many);
        }
    }
    // Every row must really be there, or the times mean nothing.
    let counts = sqlx::query(
        "SELECT (SELECT count(*) FROM webhooks_dispatch_outbox),
                (SELECT count(*) FROM webhooks_dispatch_events)",
    )
    .fetch_one(&pool)
    .await?;
    let (rows, events): (i64, i64) = (counts.try_get(0)?, counts.try_get(1)?);
    if (rows, events) != (i64::try_from(2 * calls * endpoints)?, i64::try_from(calls)?) {
        return Err(format!(
            "fan-out to {endpoints}: {rows} outbox rows and {events} events, expected {} and {calls}",
            2 * calls * endpoints
        )
        .into());
    }
    pool.close().await;
    env.drop_database(&db).await?;
    timings.events.sort_unstable();
    timings.many.sort_unstable();
    Ok(timings)
}

/// Times event `k` to every endpoint, then `dispatch_many` of one message per endpoint with the same
/// payload. The inputs are built before each clock starts; serializing them is part of the call.
async fn time_pair(
    d: &Dispatcher<sqlx::PgPool>,
    endpoints: &[String],
    k: u64,
) -> Result<(Duration, Duration)> {
    let event = NewEvent::new(EVENT_OWNER, EVENT_TYPE, payload(k));
    let started = Instant::now();
    let dispatched = d.dispatch_event(event).await?;
    let event_time = started.elapsed();
    if dispatched.messages.len() != endpoints.len() || !dispatched.skipped.is_empty() {
        return Err(format!(
            "event went to {} endpoints and skipped {}, expected {} and none",
            dispatched.messages.len(),
            dispatched.skipped.len(),
            endpoints.len()
        )
        .into());
    }
    let batch = endpoints
        .iter()
        .map(|id| NewMessage::new(id, EVENT_TYPE, payload(k)))
        .collect();
    let started = Instant::now();
    let sent = d.dispatch_many(batch).await?;
    let many_time = started.elapsed();
    if sent.len() != endpoints.len() {
        return Err(format!(
            "dispatch_many wrote {} of {} messages",
            sent.len(),
            endpoints.len()
        )
        .into());
    }
    Ok((event_time, many_time))
}

/// Adds the best round's median and p99 for `dispatch_event` and for its `dispatch_many` baseline.
fn report_enqueue(report: &mut Report, endpoints: usize, rounds: &EnqueueRounds) {
    let (to, msgs) = (count(endpoints, "endpoint"), count(endpoints, "msg"));
    let Some(best) = rounds.best() else {
        let why = rounds.errors.first().map_or("not run", String::as_str);
        return report.error(&format!("{SCENARIO}: enqueue to {to}"), &why);
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99) = (ms(best.median()), ms(percentile(&best.events, 99.0)));
    let (b50, b99) = (ms(percentile(&best.many, 50.0)), ms(percentile(&best.many, 99.0)));
    let per_msg_us = |median_ms: f64| median_ms * 1000.0 / endpoints as f64;
    let mut note = format!(
        "{} events one call at a time, each alternating with dispatch_many of the same {msgs} (one per \
         endpoint, same payload), after {WARM_UP} untimed pairs; per message {:.1} µs (dispatch_many {:.1} µs)",
        best.events.len(),
        per_msg_us(p50),
        per_msg_us(b50)
    );
    if rounds.ok.len() + rounds.errors.len() > 1 {
        let medians: Vec<String> = rounds
            .ok
            .iter()
            .map(|t| format!("{:.2}", ms(t.median())))
            .collect();
        note.push_str(&format!(
            "\nlowest median of {} rounds: {} ms",
            rounds.ok.len(),
            medians.join(", ")
        ));
    }
    for e in &rounds.errors {
        note.push_str(&format!("\na round failed: {e}"));
    }
    let key = format!("fanout.enqueue.{endpoints}");
    let base = format!("{key}.dispatch_many");
    let label = format!("dispatch_event to {to}, median");
    report
        .add(SCENARIO, &format!("{key}.p50"), &label, p50, "ms")
        .note(note);
    report.add(SCENARIO, &format!("{key}.p99"), "  p99", p99, "ms");
    let label = format!("  baseline: dispatch_many of those {msgs}, median");
    report.add(SCENARIO, &format!("{base}.p50"), &label, b50, "ms");
    report.add(SCENARIO, &format!("{base}.p99"), "  baseline p99", b99, "ms");
    report.ratio(&format!("{key}.p50"), &format!("{base}.p50"), "dispatch_many");
    report.ratio(&format!("{key}.p99"), &format!("{base}.p99"), "dispatch_many p99");
}

/// Adds the best delivery round at `endpoints` endpoints, compared with scenario 2 when it ran.
fn report_delivery(report: &mut Report, tuning: &Tuning, endpoints: usize, events: usize, samples: &Samples) {
    let key = format!("fanout.delivery.{endpoints}");
    let label = format!(
        "1 worker: {} × {} = {}",
        count(events, "event"),
        count(endpoints, "endpoint"),
        count(events * endpoints, "msg")
    );
    if !samples.report(report, SCENARIO, &key, &label) {
        return;
    }
    // With few endpoints the per-endpoint cap, not the worker's concurrency, bounds what is in flight.
    let in_flight = tuning.concurrency.min(endpoints * tuning.per_endpoint);
    report.append_note(
        &key,
        &format!(
            "at most {in_flight} deliveries in flight (concurrency {}, per-endpoint cap {}); each endpoint got each \
             event's payload once",
            tuning.concurrency, tuning.per_endpoint
        ),
    );
    report.ratio(&key, "delivery.one_worker", "scenario 2 (100 endpoints)");
}

/// `n` and `noun`, with an `s` unless `n` is 1, for labels that name counts of 1 and more.
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// The receiver got every one of the first `events` events' payloads at each endpoint it heard from, exactly
/// once. The caller has checked the request count and the distinct ids, so this also means no endpoint missed
/// one and no message went out with another message's body (or an empty one).
pub fn received_every_event(receiver: &Receiver, events: usize, label: &str) -> Result<()> {
    let received = receiver.received();
    let requests = received.iter().map(|r| (r.path.as_str(), r.body.as_ref()));
    match fan_out_gap(requests, events) {
        None => Ok(()),
        Some(why) => Err(format!("{label}: {why}").into()),
    }
}

/// Why the requests (path, body) are not each of `events` event payloads exactly once at each path, if not.
fn fan_out_gap<'a>(requests: impl IntoIterator<Item = (&'a str, &'a [u8])>, events: usize) -> Option<String> {
    let bodies: HashSet<String> = (0..events as u64)
        .map(|k| serde_json::to_string(&payload(k)).unwrap_or_default())
        .collect();
    let mut seen: HashSet<(&str, &[u8])> = HashSet::new();
    let mut paths: HashSet<&str> = HashSet::new();
    for (path, body) in requests {
        if !std::str::from_utf8(body).is_ok_and(|b| bodies.contains(b)) {
            let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
            return Some(format!("{path} got a body that is no event's payload: {start:?}"));
        }
        if !seen.insert((path, body)) {
            return Some(format!("{path} got the same event twice"));
        }
        paths.insert(path);
    }
    (seen.len() != paths.len() * events).then(|| {
        format!(
            "{} endpoints got {} event payloads, expected {events} each",
            paths.len(),
            seen.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{delivery_events, fan_out_gap, timed_events};
    use crate::delivery::Plan;
    use crate::env::payload;

    fn body(k: u64) -> Vec<u8> {
        serde_json::to_vec(&payload(k)).unwrap()
    }

    #[test]
    fn about_n_messages_and_at_least_one_event() {
        assert_eq!(delivery_events(20_000, 1), 20_000);
        assert_eq!(delivery_events(20_000, 1_000), 20);
        assert_eq!(delivery_events(1_000, 1_000), 1);
        assert_eq!(delivery_events(1_000, 3), 333);
        assert_eq!(delivery_events(10, 1_000), 1);
        assert_eq!([1, 10, 100, 1_000].map(timed_events), [200, 200, 100, 20]);
    }

    #[test]
    fn labels_say_one_endpoint_and_two_endpoints() {
        assert_eq!(super::count(1, "endpoint"), "1 endpoint");
        assert_eq!(super::count(1_000, "msg"), "1000 msgs");
    }

    #[test]
    fn a_fan_out_plan_counts_every_endpoint_of_every_event() {
        let plan = Plan::fan_out("f", 10, 7);
        assert_eq!(
            (plan.messages, plan.events(), plan.healthy_messages()),
            (70, 7, 70)
        );
        assert_eq!(plan.workers, 1);
    }

    #[test]
    fn every_event_once_at_every_endpoint() {
        let bodies: Vec<Vec<u8>> = (0..3).map(body).collect();
        let complete: Vec<(&str, &[u8])> = ["/e0", "/e1"]
            .iter()
            .flat_map(|p| bodies.iter().map(move |b| (*p, b.as_slice())))
            .collect();
        assert_eq!(fan_out_gap(complete.iter().copied(), 3), None);

        let mut twice = complete.clone();
        twice[5] = twice[4];
        assert!(fan_out_gap(twice, 3).unwrap().contains("twice"));

        let missing = complete[..5].iter().copied();
        assert!(fan_out_gap(missing, 3).unwrap().contains("expected 3 each"));

        let mut foreign = complete.clone();
        foreign[0].1 = b"{}";
        assert!(fan_out_gap(foreign, 3).unwrap().contains("no event's payload"));
    }
}
