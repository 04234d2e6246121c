//! Scenario 2 (end-to-end delivery throughput) and the delivery run that scenarios 4, 5, 6, 10, 11 and 12
//! reuse.
//!
//! A [`Stage`] is a fresh database with the tables and optionally a history of finished rows or a backlog on
//! disabled endpoints. A measurement on it starts fresh loopback receivers, registers the endpoints, enqueues
//! N messages (not timed; as messages or as events fanned out, see [`Enqueue`]), starts the workers, and runs
//! the clock until the healthy receiver has counted every message meant for it. The workers are then shut
//! down gracefully (their `run` returns once every outcome is written) and the database is checked: each
//! healthy message delivered exactly once, nothing left leased (and, for events, each endpoint got each
//! event's payload once).
//!
//! Every measurement runs `rounds` times, interleaved with the measurements it is compared with, and the best
//! round counts (see [`Samples`]): the machine is shared, and a neighbour's build can only slow a round down.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row as _;
use tokio::sync::watch;
use webhooks_dispatch::signing::SignatureScheme;
use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{Dispatcher, RotateSecret, Worker, WorkerReport, MAX_ROTATION_GRACE};
use webhooks_dispatch_testkit::receiver::{Receiver, Reply};

use crate::baseline;
use crate::disabled::{self, Backlog};
use crate::env::{
    endpoint_url, enqueue_all, enqueue_events, register_endpoints, register_endpoints_by,
    register_owned_endpoints, Database, Env, Result, Tuning, EVENT_OWNER,
};
use crate::fanout;
use crate::report::{Report, Sample, Samples};
use crate::tablesize;

const SCENARIO: &str = "2. end-to-end delivery throughput";
/// The brief's throughput target, deliveries per second.
pub const TARGET_PER_SEC: f64 = 10_000.0;

/// How a plan's messages get into the outbox (never timed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueue {
    /// `dispatch_many`, one message per planned message, round robin over all endpoints (healthy ones
    /// first), each endpoint of its own owner.
    Messages,
    /// `dispatch_events` of one owner ([`EVENT_OWNER`]) holding all the plan's endpoints: each event becomes
    /// one message per endpoint, so the plan's `messages` is a multiple of its endpoints.
    Events,
}

/// What one delivery run looks like.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Database name label.
    pub label: &'static str,
    /// Workers, each with its own pool and dispatcher (as separate processes would have).
    pub workers: usize,
    /// `synchronous_commit=off` on the workers' connections (the optional, non-durable variant).
    pub synchronous_commit_off: bool,
    /// Finished (delivered) rows, with one attempt each, written when the stage is built.
    pub finished_rows: u64,
    /// Pending messages on disabled endpoints of their own, written when the stage is built.
    pub disabled_backlog: u64,
    /// Endpoints on the answering receiver.
    pub healthy_endpoints: usize,
    /// Endpoints on a receiver that never answers.
    pub hanging_endpoints: usize,
    /// The one owner of all the hanging endpoints (none: each endpoint is of its own owner).
    pub hanging_owner: Option<&'static str>,
    /// Messages enqueued per measurement, round-robin over all endpoints (healthy ones first).
    pub messages: usize,
    /// How long the answering receiver takes to answer (none: at once).
    pub receiver_delay: Option<Duration>,
    /// Messages one by one, or events fanned out.
    pub enqueue: Enqueue,
    /// The keys every endpoint signs with.
    pub keys: Keys,
}

/// How many keys of which scheme sign each endpoint's deliveries (rotations with the longest grace, so all
/// of them sign every attempt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The scheme of every key.
    pub scheme: SignatureScheme,
    /// Keys per endpoint, 1..=10.
    pub count: usize,
}

impl Default for Keys {
    /// One HMAC key: what every endpoint has until it rotates.
    fn default() -> Self {
        Keys {
            scheme: SignatureScheme::HmacSha256,
            count: 1,
        }
    }
}

impl Keys {
    /// Gives each endpoint these keys: its registration's HMAC key ends at once when the scheme is another.
    async fn install<E: Executor>(self, d: &Dispatcher<E>, endpoints: &[String]) -> Result<()> {
        if self == Keys::default() {
            return Ok(());
        }
        for endpoint in endpoints {
            let switch = self.scheme != SignatureScheme::HmacSha256;
            let rotations = self.count - usize::from(!switch);
            for i in 0..rotations {
                let grace = match switch && i == 0 {
                    true => Duration::ZERO,
                    false => MAX_ROTATION_GRACE,
                };
                let rotate = RotateSecret {
                    signature: Some(self.scheme),
                    grace: Some(grace),
                    ..RotateSecret::default()
                };
                d.rotate_secret(endpoint, rotate).await?;
            }
        }
        Ok(())
    }
}

impl Plan {
    /// The usual run: `messages` over 100 answering endpoints, empty history, durable commits.
    pub fn healthy(label: &'static str, workers: usize, messages: usize) -> Plan {
        Plan {
            label,
            workers,
            synchronous_commit_off: false,
            finished_rows: 0,
            disabled_backlog: 0,
            healthy_endpoints: crate::env::ENDPOINTS,
            hanging_endpoints: 0,
            hanging_owner: None,
            messages,
            receiver_delay: None,
            enqueue: Enqueue::Messages,
            keys: Keys::default(),
        }
    }

    /// One worker delivering `events` events of one owner, each fanned out to all its `endpoints` endpoints.
    pub fn fan_out(label: &'static str, endpoints: usize, events: usize) -> Plan {
        Plan {
            healthy_endpoints: endpoints,
            enqueue: Enqueue::Events,
            ..Plan::healthy(label, 1, events * endpoints)
        }
    }

    /// Events to dispatch when the plan enqueues by events.
    pub fn events(&self) -> usize {
        self.messages / (self.healthy_endpoints + self.hanging_endpoints).max(1)
    }

    /// Endpoint index of message `i`.
    fn target(&self, i: usize) -> usize {
        i % (self.healthy_endpoints + self.hanging_endpoints)
    }

    /// How many messages go to answering endpoints.
    pub fn healthy_messages(&self) -> usize {
        (0..self.messages)
            .filter(|&i| self.target(i) < self.healthy_endpoints)
            .count()
    }
}

/// A database with the tables and, if planned, a finished history, ready for measurements.
pub struct Stage {
    db: Database,
    pool: PgPool,
    setup: Dispatcher<PgPool>,
    /// Time taken to write the finished history, if the plan asked for one.
    pub prefill: Option<Duration>,
    /// The backlog on disabled endpoints, if the plan asked for one.
    pub backlog: Option<Backlog>,
}

impl Stage {
    /// Fresh database with the tables and (if planned) the finished history.
    pub async fn new(env: &Env, plan: &Plan) -> Result<Stage> {
        let db = env.fresh_database(plan.label).await?;
        let pool = env.pool(&db, 4, false).await?;
        let setup = env.builder(pool.clone()).build();
        setup.migrate().await?;
        let prefill = match plan.finished_rows {
            0 => None,
            rows => {
                // The history belongs to endpoints of its own (the measured messages get fresh ones).
                let urls: Vec<String> = (0..crate::env::ENDPOINTS).map(|i| endpoint_url(443, i)).collect();
                register_endpoints(&setup, &urls).await?;
                Some(tablesize::prefill(&pool, rows).await?)
            }
        };
        // After the history, which would otherwise be spread over the backlog's endpoints too.
        let backlog = match plan.disabled_backlog {
            0 => None,
            rows => Some(disabled::prefill(&setup, &pool, rows).await?),
        };
        Ok(Stage {
            db,
            pool,
            setup,
            prefill,
            backlog,
        })
    }

    /// The setup pool, for checks after a measurement.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Drops the database.
    pub async fn close(self, env: &Env) -> Result<()> {
        self.pool.close().await;
        env.drop_database(&self.db).await
    }
}

/// The receivers and endpoints of one measurement. Fresh for every measurement: a new port means a new
/// space of TCP 4-tuples (without keep-alive every delivery is a new connection, and a receiver reused across
/// rounds would collide with its own TIME_WAIT sockets), and dropping it frees what it recorded.
struct Targets {
    healthy: Receiver,
    _hanging: Option<Receiver>,
    endpoints: Vec<String>,
}

impl Targets {
    async fn new(env: &Env, plan: &Plan, stage: &Stage) -> Result<Targets> {
        let reply = match plan.receiver_delay {
            Some(delay) => Reply::DelayedStatus(delay, 204),
            None => Reply::default(),
        };
        let healthy = env.receiver(reply).await?;
        let hanging = match plan.hanging_endpoints {
            0 => None,
            _ => Some(env.receiver(Reply::Hang).await?),
        };
        let mut urls: Vec<String> = (0..plan.healthy_endpoints)
            .map(|i| endpoint_url(healthy.port(), i))
            .collect();
        if let Some(h) = &hanging {
            urls.extend((0..plan.hanging_endpoints).map(|i| endpoint_url(h.port(), i)));
        }
        let endpoints = match (plan.enqueue, plan.hanging_owner) {
            (Enqueue::Messages, None) => register_endpoints(&stage.setup, &urls).await?,
            (Enqueue::Messages, Some(owner)) => {
                let healthy = plan.healthy_endpoints;
                let owner_of = |i: usize| match i < healthy {
                    true => format!("customer_{i}"),
                    false => owner.to_owned(),
                };
                register_endpoints_by(&stage.setup, &urls, owner_of).await?
            }
            (Enqueue::Events, _) => register_owned_endpoints(&stage.setup, EVENT_OWNER, &urls).await?,
        };
        plan.keys.install(&stage.setup, &endpoints).await?;
        Ok(Targets {
            healthy,
            _hanging: hanging,
            endpoints,
        })
    }

    /// Puts the plan's messages in the outbox the way the plan says.
    async fn enqueue(&self, plan: &Plan, stage: &Stage) -> Result<()> {
        match plan.enqueue {
            Enqueue::Messages => {
                let indexes: Vec<usize> = (0..plan.messages).map(|i| plan.target(i)).collect();
                enqueue_all(&stage.setup, &self.endpoints, &indexes).await
            }
            Enqueue::Events => enqueue_events(&stage.setup, plan.events(), self.endpoints.len()).await,
        }
    }
}

/// What one delivery measurement saw.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Messages the healthy receiver had to count.
    pub healthy_messages: usize,
    /// From starting the workers until the receiver counted them all.
    pub elapsed: Duration,
    /// Deliveries per second (healthy messages / elapsed).
    pub rate: f64,
    /// TCP connections the healthy receiver accepted during the run (one per delivery without keep-alive).
    pub connections: usize,
    /// CPU use and database time while delivering.
    pub diagnostics: String,
}

impl Measured {
    /// The figure and its note.
    pub fn sample(&self) -> Sample {
        Sample {
            rate: self.rate,
            note: format!(
                "{} msgs in {:.2} s, each delivered once (DB and receiver agree); receiver accepted {} TCP \
                 connections\n{}",
                self.healthy_messages,
                self.elapsed.as_secs_f64(),
                self.connections,
                self.diagnostics
            ),
        }
    }
}

/// Runs scenario 2: one worker, two workers, the two baselines, and optionally the non-durable variant.
/// With `hot`, every round also measures the hot-endpoint run (scenario 6), so that it is interleaved with
/// the figures it is compared with; its samples are reported by `hot::report`.
pub async fn scenario(
    env: &Env,
    report: &mut Report,
    tuning: &Tuning,
    messages: usize,
    rounds: usize,
    mut hot: Option<&mut Samples>,
) {
    let (mut one, mut two) = (Samples::default(), Samples::default());
    let (mut http, mut db) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        one.push(run(env, tuning, &Plan::healthy("deliver1", 1, messages)).await);
        if let Some(hot) = hot.as_deref_mut() {
            hot.push(crate::hot::round(env, tuning, messages).await);
        }
        two.push(run(env, tuning, &Plan::healthy("deliver2", 2, messages)).await);
        http.push(baseline::raw_http(env, messages, tuning.concurrency).await);
        db.push(baseline::raw_db(env, messages).await);
    }
    let target = |report: &mut Report, key: &str| {
        if let Some(v) = report.value(key) {
            report.target(key, ">= 10,000 msg/s", v >= TARGET_PER_SEC);
        }
    };
    if one.report(report, SCENARIO, "delivery.one_worker", "1 worker") {
        target(report, "delivery.one_worker");
    }
    let label = "2 workers (own pool + dispatcher each)";
    if two.report(report, SCENARIO, "delivery.two_workers", label) {
        target(report, "delivery.two_workers");
    }
    http.report(
        report,
        SCENARIO,
        "baseline.raw_http",
        "baseline (a): raw keep-alive HTTPS POST loop",
    );
    db.report(
        report,
        SCENARIO,
        "baseline.raw_db",
        "baseline (b): raw claim + complete loop",
    );
    for (key, label) in [
        ("delivery.one_worker", "1 worker"),
        ("delivery.two_workers", "2 workers"),
    ] {
        // One figure carries one ratio, so the comparison with the database loop gets its own row.
        report.ratio(key, "baseline.raw_http", "raw HTTPS loop");
        if let (Some(v), Some(db)) = (report.value(key), report.value("baseline.raw_db")) {
            let row = format!("{label} ÷ raw claim+complete loop");
            report.add(SCENARIO, &format!("{key}.vs_raw_db"), &row, v / db, "×");
        }
    }
}

/// The optional, clearly non-durable variant: one worker with `synchronous_commit=off` on its connections.
pub async fn synchronous_commit_off(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize) {
    let mut plan = Plan::healthy("deliver_async", 1, messages);
    plan.synchronous_commit_off = true;
    let mut samples = Samples::default();
    samples.push(run(env, tuning, &plan).await);
    let key = "delivery.one_worker.synchronous_commit_off";
    let label = "optional, NOT durable: 1 worker, synchronous_commit=off";
    if samples.report(report, SCENARIO, key, label) {
        report.ratio(key, "delivery.one_worker", "durable");
    }
}

/// One measurement on its own fresh stage.
pub async fn run(env: &Env, tuning: &Tuning, plan: &Plan) -> Result<Sample> {
    let stage = Stage::new(env, plan).await?;
    let measured = measure(env, tuning, plan, &stage).await;
    stage.close(env).await?;
    Ok(measured?.sample())
}

/// Enqueues the plan's messages on `stage` and times their delivery; see the module docs.
pub async fn measure(env: &Env, tuning: &Tuning, plan: &Plan, stage: &Stage) -> Result<Measured> {
    let targets = Targets::new(env, plan, stage).await?;
    let db_start: DateTime<Utc> = sqlx::query("SELECT now()")
        .fetch_one(&stage.pool)
        .await?
        .try_get(0)?;
    targets.enqueue(plan, stage).await?;
    let expected = plan.healthy_messages();
    let stats_before = env.statement_stats(&stage.pool).await;

    let (stop, stopped) = watch::channel(false);
    let mut pools = Vec::new();
    let mut workers = Vec::new();
    let cpu_start = env.meter.snapshot();
    let started = Instant::now();
    for _ in 0..plan.workers {
        let pool = env
            .pool(&stage.db, tuning.worker_pool_size, plan.synchronous_commit_off)
            .await?;
        let worker = Worker::new(tuning.dispatcher(env, pool.clone()))
            .claim_batch(tuning.claim_batch)
            .poll_interval(Duration::from_millis(tuning.poll_interval_ms))
            .shutdown_grace(Duration::from_millis(tuning.shutdown_grace_ms));
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(worker.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })));
        pools.push(pool);
    }
    // Generous: a run this slow has failed anyway, and the error says how far it got.
    let timeout = Duration::from_secs(60 + plan.messages as u64 / 100);
    let arrived = targets.healthy.wait_for(expected, timeout).await;
    let elapsed = started.elapsed();
    let cpu = env.meter.since(&cpu_start);

    let _ = stop.send(true);
    let mut summed = WorkerReport::default();
    for w in workers {
        let r = w.await??;
        summed.deliveries.delivered += r.deliveries.delivered;
        summed.released += r.released;
    }
    for pool in pools {
        pool.close().await;
    }
    if !arrived {
        let got = targets.healthy.count();
        return Err(format!(
            "{}: receiver counted {got} of {expected} within {timeout:?}",
            plan.label
        )
        .into());
    }
    verify(&stage.pool, &targets.healthy, db_start, expected, plan.label).await?;
    if plan.enqueue == Enqueue::Events {
        fanout::received_every_event(&targets.healthy, plan.events(), plan.label)?;
    }
    if summed.deliveries.delivered != expected as u64 {
        return Err(format!("{}: workers report {summed:?}, expected {expected}", plan.label).into());
    }
    let mut diagnostics = cpu.describe();
    if let (Some(before), Some(after)) = (stats_before, env.statement_stats(&stage.pool).await) {
        diagnostics.push('\n');
        diagnostics.push_str(&after.since(&before).describe());
    }
    Ok(Measured {
        healthy_messages: expected,
        elapsed,
        rate: expected as f64 / elapsed.as_secs_f64(),
        connections: targets.healthy.connections_accepted(),
        diagnostics,
    })
}

/// Failed attempts to the answering receiver since $1 (its URLs match $2): without them a run's time is
/// meaningless, because a failed attempt is retried only a minute later.
const FAILED_HEALTHY: &str = "\
SELECT count(*), min(a.error)
FROM webhooks_dispatch_attempts AS a
JOIN webhooks_dispatch_outbox AS o ON o.id = a.message_id
JOIN webhooks_dispatch_endpoints AS e ON e.id = o.endpoint_id
WHERE a.attempted_at >= $1 AND a.outcome <> 'delivered' AND e.url LIKE $2";

/// The database agrees with the receiver: the `expected` messages enqueued since `since` are delivered with
/// one attempt each and no failed one, nothing is leased, and the receiver saw each message id once.
pub async fn verify(
    pool: &PgPool,
    receiver: &Receiver,
    since: DateTime<Utc>,
    expected: usize,
    label: &str,
) -> Result<()> {
    let failed = sqlx::query(FAILED_HEALTHY)
        .bind(since)
        .bind(format!("%:{}/%", receiver.port()))
        .fetch_one(pool)
        .await?;
    let (failures, error): (i64, Option<String>) = (failed.try_get(0)?, failed.try_get(1)?);
    if failures > 0 {
        return Err(format!(
            "{label}: {failures} attempts to the answering receiver failed (e.g. {:?}) and were retried a \
             minute later, so the run's time means nothing; lower the concurrency or the message count",
            error.unwrap_or_default()
        )
        .into());
    }
    let counts = sqlx::query(
        "SELECT
            (SELECT count(*) FROM webhooks_dispatch_outbox WHERE status = 'delivered' AND created_at >= $1),
            (SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token IS NOT NULL),
            (SELECT count(*) FROM webhooks_dispatch_attempts WHERE outcome = 'delivered' AND attempted_at >= $1)",
    )
    .bind(since)
    .fetch_one(pool)
    .await?;
    let (delivered, leased, attempts): (i64, i64, i64) =
        (counts.try_get(0)?, counts.try_get(1)?, counts.try_get(2)?);
    let want = i64::try_from(expected)?;
    if delivered != want || attempts != want || leased != 0 {
        return Err(format!(
            "{label}: database says {delivered} delivered, {attempts} delivered attempts, {leased} leased; \
             expected {expected}, {expected}, 0"
        )
        .into());
    }
    received_once(receiver, expected, label).map(drop)
}

/// The receiver saw exactly `expected` requests, each with its own `webhook-id`; returns those ids.
pub fn received_once(receiver: &Receiver, expected: usize, label: &str) -> Result<HashSet<String>> {
    let received = receiver.received();
    let distinct: HashSet<String> = received
        .iter()
        .filter_map(|r| r.headers.get("webhook-id").and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
        .collect();
    if received.len() != expected || distinct.len() != expected {
        return Err(format!(
            "{label}: receiver saw {} requests with {} distinct ids, expected {expected}",
            received.len(),
            distinct.len()
        )
        .into());
    }
    Ok(distinct)
}
