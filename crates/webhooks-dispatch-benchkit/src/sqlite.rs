//! Scenario 9: the embedded default engine, SQLite, each figure against a baseline from the same run.
//!
//! Enqueue: four measurements, each on a fresh SQLite file (in the system's temporary directory, on the same
//! disk as the benchmark's cluster) with the library's tables and 100 endpoints registered through the
//! library. `dispatch` from 16 tasks and `dispatch_many` (500 per call) from 16 tasks go through the
//! library's `SqliteExecutor`; the baselines write the same rows into the same table with plain `INSERT`s on
//! the same kind of connection: rusqlite opened with the executor's flags and its `CONNECTION_SETUP` (WAL,
//! `synchronous = FULL`, foreign keys), one connection behind a mutex used from tokio's blocking pool, one
//! transaction per call — one row per call, or 500 rows through a cached prepared statement per call. Both
//! sides do a caller's client-side work (serialize the payload, make an id). Every measurement ends by
//! counting the rows.
//!
//! Delivery: N messages over 100 endpoints on a SQLite file, one worker with scenario 2's settings, timed
//! until the receiver has counted them all, then checked as scenario 2 checks (the file and the receiver
//! agree: each delivered once, no failed attempt, nothing leased). Compared with PostgreSQL's 100-endpoint
//! figure of this run (scenario 2's, or measured here, interleaved, when scenario 2 does not run).
//!
//! `POST /v1/messages/batch`: scenario 8's harness with the service on a SQLite file, 1,000 messages per
//! request; accepted/s and delivered/s over the same run, checked the same way.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::watch;
use webhooks_dispatch::store::rusqlite::SqliteExecutor;
use webhooks_dispatch::Worker;
use webhooks_dispatch_testkit::receiver::{Receiver, Reply};

use crate::api::{self, Shape, Store};
use crate::cpu::Usage;
use crate::delivery::{self, Plan};
use crate::enqueue::{self, batch_range, dispatch_batch, dispatch_one, in_tasks, BATCH};
use crate::env::{
    chain, endpoint_url, enqueue_all, payload, setup_endpoints, Env, Result, Tuning, ENDPOINTS, EVENT_TYPE,
};
use crate::report::{Report, Sample, Samples};
use crate::service::LoadGen;

const SCENARIO: &str = "9. SQLite (embedded default)";
/// Messages per `POST /v1/messages/batch`: the API's maximum.
pub const API_BATCH: usize = 1_000;
/// The brief's target for `dispatch_many` over plain batch inserts.
const BATCH_TARGET: f64 = 0.5;

/// The columns `dispatch` writes, as the SQLite statements store them (timestamps in Unix microseconds).
const RAW_INSERT: &str = "\
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?5, ?5)";

/// What the file says after a delivery run.
const COUNTS: &str = "\
SELECT (SELECT count(*) FROM webhooks_dispatch_outbox),
       (SELECT count(*) FROM webhooks_dispatch_outbox WHERE status = 'delivered'),
       (SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token IS NOT NULL),
       (SELECT count(*) FROM webhooks_dispatch_attempts WHERE outcome = 'delivered'),
       (SELECT count(*) FROM webhooks_dispatch_attempts WHERE outcome <> 'delivered'),
       (SELECT min(error) FROM webhooks_dispatch_attempts WHERE outcome <> 'delivered')";

/// Which way rows are written in one enqueue measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    RawInsert,
    Dispatch,
    RawBatch,
    DispatchMany,
}

/// Runs the scenario: enqueue, then interleaved rounds of delivery (with the PostgreSQL reference when
/// needed) and the service's batch endpoint.
pub async fn scenario(
    env: &Env,
    report: &mut Report,
    tuning: &Tuning,
    messages: usize,
    rounds: usize,
    tasks: usize,
) {
    enqueue_figures(env, report, messages, tasks).await;
    let loadgen = match LoadGen::new() {
        Ok(l) => Some(l),
        Err(e) => {
            report.error("SQLite: load generator", &chain(&*e));
            None
        }
    };
    let measure_pg = report.value("delivery.one_worker").is_none();
    let (mut lite, mut pg, mut accepted, mut delivered) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for _ in 0..rounds {
        lite.push(deliver(env, tuning, messages).await);
        if measure_pg {
            pg.push(delivery::run(env, tuning, &Plan::healthy("sqlite_pg_ref", 1, messages)).await);
        }
        if let Some(loadgen) = &loadgen {
            let run = match Store::sqlite() {
                Ok(store) => {
                    api::measure(env, loadgen, store, ENDPOINTS, messages, Shape::Batch(API_BATCH)).await
                }
                Err(e) => Err(e),
            };
            match run {
                Ok(run) => {
                    accepted.push(Ok(run.accepted));
                    delivered.push(Ok(run.delivered));
                }
                Err(e) => {
                    let why = e.to_string();
                    accepted.push(Err(why.clone().into()));
                    delivered.push(Err(why.into()));
                }
            }
        }
    }
    if measure_pg {
        let label = "reference: PostgreSQL, 1 worker, 100 endpoints (scenario 2)";
        pg.report(report, SCENARIO, "delivery.one_worker", label);
    }
    let label = format!("delivery, 1 worker, {messages} msgs over {ENDPOINTS} endpoints");
    if lite.report(report, SCENARIO, "sqlite.delivery", &label) {
        report.ratio("sqlite.delivery", "delivery.one_worker", "PostgreSQL, same run");
    }
    if loadgen.is_some() {
        let label = format!("service: POST /v1/messages/batch ×{API_BATCH}: accepted");
        if accepted.report(report, SCENARIO, "sqlite.api_batch.accepted", &label) {
            report.ratio(
                "sqlite.api_batch.accepted",
                "sqlite.dispatch_many",
                "library dispatch_many",
            );
        }
        let label = "  service: delivered end to end, same run";
        delivered.report(report, SCENARIO, "sqlite.api_batch.delivered", label);
    }
}

async fn enqueue_figures(env: &Env, report: &mut Report, messages: usize, tasks: usize) {
    let cases = [
        (Method::RawInsert, "sqlite.raw_insert", "plain INSERT, 1 row/txn"),
        (Method::Dispatch, "sqlite.dispatch", "dispatch, 1 row/call"),
        (
            Method::RawBatch,
            "sqlite.raw_batch_insert",
            "plain INSERTs, 500 rows/txn",
        ),
        (
            Method::DispatchMany,
            "sqlite.dispatch_many",
            "dispatch_many, 500 rows/call",
        ),
    ];
    for (method, key, name) in cases {
        match enqueue_rate(env, method, messages, tasks).await {
            Ok((rate, cpu)) => {
                let label = format!("{name}, {tasks} tasks");
                report
                    .add(SCENARIO, key, &label, rate, "msg/s")
                    .note(cpu.describe());
            }
            Err(e) => report.error(&format!("SQLite enqueue ({name})"), &chain(&*e)),
        }
    }
    report.ratio("sqlite.dispatch", "sqlite.raw_insert", "plain INSERT");
    report.ratio("sqlite.dispatch_many", "sqlite.raw_batch_insert", "plain INSERTs");
    if let (Some(v), Some(b)) = (
        report.value("sqlite.dispatch_many"),
        report.value("sqlite.raw_batch_insert"),
    ) {
        report.target(
            "sqlite.dispatch_many",
            ">= 0.5× plain INSERTs",
            v >= BATCH_TARGET * b,
        );
    }
}

/// Opens `path` the way `SqliteExecutor::open` does: same flags, busy timeout and connection settings.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(webhooks_dispatch::store::sqlite::CONNECTION_SETUP)?;
    Ok(conn)
}

/// One enqueue measurement on a fresh file; returns rows per second and the CPU used meanwhile.
async fn enqueue_rate(env: &Env, method: Method, messages: usize, tasks: usize) -> Result<(f64, Usage)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("enqueue.db");
    let d = env.builder(SqliteExecutor::open(&path)?).build();
    // The endpoints exist (the outbox has a foreign key to them) but are never delivered to here.
    let urls: Vec<String> = (0..ENDPOINTS).map(|i| endpoint_url(443, i)).collect();
    let endpoints = Arc::new(setup_endpoints(&d, &urls).await?);
    let raw = Arc::new(Mutex::new(connect(&path)?));
    let batches = messages.div_ceil(BATCH);

    let cpu_start = env.meter.snapshot();
    let elapsed = match method {
        Method::Dispatch => {
            in_tasks(tasks, messages, move |i| {
                dispatch_one(d.clone(), endpoints.clone(), i)
            })
            .await?
        }
        Method::DispatchMany => {
            in_tasks(tasks, batches, move |b| {
                dispatch_batch(d.clone(), endpoints.clone(), b, messages)
            })
            .await?
        }
        Method::RawInsert => {
            let raw = raw.clone();
            in_tasks(tasks, messages, move |i| {
                insert_rows(raw.clone(), endpoints.clone(), i..i + 1)
            })
            .await?
        }
        Method::RawBatch => {
            let raw = raw.clone();
            in_tasks(tasks, batches, move |b| {
                insert_rows(raw.clone(), endpoints.clone(), batch_range(b, messages))
            })
            .await?
        }
    };
    let cpu = env.meter.since(&cpu_start);
    let rows: i64 = raw.lock().unwrap_or_else(PoisonError::into_inner).query_row(
        "SELECT count(*) FROM webhooks_dispatch_outbox",
        [],
        |r| r.get(0),
    )?;
    if rows != i64::try_from(messages)? {
        return Err(format!("{method:?}: expected {messages} rows, found {rows}").into());
    }
    Ok((messages as f64 / elapsed.as_secs_f64(), cpu))
}

/// Plain INSERTs of messages `range` in one transaction, on the shared connection from the blocking pool.
async fn insert_rows(
    conn: Arc<Mutex<Connection>>,
    endpoints: Arc<Vec<String>>,
    range: Range<usize>,
) -> Result<()> {
    let rows = range
        .map(|i| {
            let body = serde_json::to_string(&payload(i as u64))?;
            Ok((
                enqueue::message_id(),
                endpoints[i % endpoints.len()].clone(),
                body,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let now = chrono::Utc::now().timestamp_micros();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(RAW_INSERT)?;
            for (id, endpoint, body) in &rows {
                insert.execute(rusqlite::params![id, endpoint, EVENT_TYPE, body, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    })
    .await?
}

/// One delivery run on a fresh SQLite file; see the module docs.
async fn deliver(env: &Env, tuning: &Tuning, messages: usize) -> Result<Sample> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("deliver.db");
    let d = tuning.dispatcher(env, SqliteExecutor::open(&path)?);
    let receiver = env.receiver(Reply::default()).await?;
    let urls: Vec<String> = (0..ENDPOINTS).map(|i| endpoint_url(receiver.port(), i)).collect();
    let endpoints = setup_endpoints(&d, &urls).await?;
    let targets: Vec<usize> = (0..messages).map(|i| i % ENDPOINTS).collect();
    enqueue_all(&d, &endpoints, &targets).await?;

    // The worker shares the dispatcher (and so its in-memory wake-up), as the service's does on SQLite.
    let worker = Worker::new(d.clone())
        .claim_batch(tuning.claim_batch)
        .poll_interval(Duration::from_millis(tuning.poll_interval_ms))
        .shutdown_grace(Duration::from_millis(tuning.shutdown_grace_ms));
    let (stop, mut stopped) = watch::channel(false);
    let cpu_start = env.meter.snapshot();
    let started = Instant::now();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let timeout = Duration::from_secs(60 + messages as u64 / 100);
    let arrived = receiver.wait_for(messages, timeout).await;
    let elapsed = started.elapsed();
    let cpu = env.meter.since(&cpu_start);
    let _ = stop.send(true);
    let worker_report = handle.await??;
    if !arrived {
        return Err(format!(
            "SQLite delivery: receiver counted {} of {messages} within {timeout:?}",
            receiver.count()
        )
        .into());
    }
    verify_file(&path, &receiver, messages, "SQLite delivery").await?;
    if worker_report.deliveries.delivered != messages as u64 {
        return Err(format!("SQLite delivery: worker reports {worker_report:?}, expected {messages}").into());
    }
    Ok(Sample {
        rate: messages as f64 / elapsed.as_secs_f64(),
        note: format!(
            "{messages} msgs in {:.2} s, each delivered once (file and receiver agree); receiver accepted {} TCP \
             connections\n{}",
            elapsed.as_secs_f64(),
            receiver.connections_accepted(),
            cpu.describe()
        ),
    })
}

/// The SQLite file at `path` agrees with the receiver: it holds exactly `expected` messages, all delivered
/// with one delivered attempt each and no other attempt, nothing leased; the receiver saw each id once.
pub async fn verify_file(path: &Path, receiver: &Receiver, expected: usize, label: &str) -> Result<()> {
    let path = path.to_owned();
    let counts = tokio::task::spawn_blocking(move || -> Result<([i64; 5], Option<String>)> {
        let conn = connect(&path)?;
        Ok(conn.query_row(COUNTS, [], |r| {
            Ok(([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?], r.get(5)?))
        })?)
    })
    .await??;
    let ([rows, delivered, leased, attempts, failed], error) = counts;
    if failed > 0 {
        return Err(format!(
            "{label}: {failed} attempts failed (e.g. {:?}) and were retried a minute later, so the run's time means \
             nothing",
            error.unwrap_or_default()
        )
        .into());
    }
    let want = i64::try_from(expected)?;
    if rows != want || delivered != want || attempts != want || leased != 0 {
        return Err(format!(
            "{label}: file says {rows} messages, {delivered} delivered, {attempts} delivered attempts, {leased} \
             leased; expected {expected}, {expected}, {expected}, 0"
        )
        .into());
    }
    delivery::received_once(receiver, expected, label).map(drop)
}
