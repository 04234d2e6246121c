//! Scenario 1: enqueue throughput, the library against plain INSERTs of the same rows through the same
//! driver and pool size.
//!
//! Four measurements, each on its own fresh database with the tables created and 100 endpoints registered:
//! `dispatch` and a plain single-row `INSERT`, one row per call from the same number of tasks; then
//! `dispatch_many` and a plain `INSERT … SELECT * FROM unnest(…)`, 500 rows per call. The plain variants do the
//! same client-side work a caller would (serialize the payload, make a ULID id), so the ratio isolates what the
//! library adds: validation, the endpoint/subscription check inside the statement, and the debounced NOTIFY.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row as _;
use tokio::task::JoinSet;
use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{Dispatcher, NewMessage};

use crate::cpu::Usage;
use crate::env::{endpoint_url, payload, setup_endpoints, Env, Result, ENDPOINTS, EVENT_TYPE};
use crate::report::Report;

const SCENARIO: &str = "1. enqueue throughput";
/// Rows per `dispatch_many` call and per plain multi-row insert, as the brief fixes it.
pub const BATCH: usize = 500;

/// The same columns `dispatch` writes, one row per statement.
const RAW_INSERT: &str = "\
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::timestamptz, $6::timestamptz, $6::timestamptz)";

/// The same columns `dispatch_many` writes, one statement per batch.
const RAW_MULTI_INSERT: &str = "\
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, idempotency_key, next_attempt_at, created_at, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::timestamptz[], $6::timestamptz[], $6::timestamptz[])";

/// Which way rows are written in one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Dispatch,
    RawInsert,
    DispatchMany,
    RawMultiInsert,
}

/// Runs the four measurements and adds their figures (msg/s) and ratios to the report.
pub async fn run(env: &Env, report: &mut Report, messages: usize, tasks: usize) -> Result<()> {
    let cases = [
        (Method::RawInsert, "enqueue.raw_insert", "plain single-row INSERT"),
        (Method::Dispatch, "enqueue.dispatch", "dispatch"),
        (
            Method::RawMultiInsert,
            "enqueue.raw_multi_insert",
            "plain INSERT … unnest",
        ),
        (Method::DispatchMany, "enqueue.dispatch_many", "dispatch_many"),
    ];
    for (method, key, name) in cases {
        let per_call = match method {
            Method::Dispatch | Method::RawInsert => "1 row/call".to_owned(),
            Method::DispatchMany | Method::RawMultiInsert => format!("{BATCH} rows/call"),
        };
        let (rate, cpu) = measure(env, method, messages, tasks, ENDPOINTS).await?;
        let label = format!("{name}, {per_call}, {tasks} tasks");
        report
            .add(SCENARIO, key, &label, rate, "msg/s")
            .note(cpu.describe());
    }
    report.ratio("enqueue.dispatch", "enqueue.raw_insert", "plain INSERT");
    report.ratio(
        "enqueue.dispatch_many",
        "enqueue.raw_multi_insert",
        "plain unnest INSERT",
    );
    Ok(())
}

/// `dispatch`, one message per call from `tasks` tasks (one pool connection each), round robin over
/// `endpoints` endpoints, on a fresh database: the library figure the HTTP API's acceptance is compared with.
/// Returns messages per second and the CPU used meanwhile.
pub async fn dispatch_rate(
    env: &Env,
    messages: usize,
    tasks: usize,
    endpoints: usize,
) -> Result<(f64, Usage)> {
    measure(env, Method::Dispatch, messages, tasks, endpoints).await
}

/// One measurement on a fresh database; returns rows per second and the CPU used meanwhile.
async fn measure(
    env: &Env,
    method: Method,
    messages: usize,
    tasks: usize,
    endpoint_count: usize,
) -> Result<(f64, Usage)> {
    let db = env.fresh_database("enqueue").await?;
    // Same driver and pool size for the library and the plain statements: one connection per task.
    let pool = env.pool(&db, u32::try_from(tasks)?, false).await?;
    let d = env.builder(pool.clone()).build();
    // The endpoints exist (the outbox has a foreign key to them) but are never delivered to here.
    let urls: Vec<String> = (0..endpoint_count).map(|i| endpoint_url(443, i)).collect();
    let endpoints = Arc::new(setup_endpoints(&d, &urls).await?);

    let cpu_start = env.meter.snapshot();
    let elapsed = match method {
        Method::Dispatch => {
            let (d, endpoints) = (d.clone(), endpoints.clone());
            in_tasks(tasks, messages, move |i| {
                dispatch_one(d.clone(), endpoints.clone(), i)
            })
            .await?
        }
        Method::RawInsert => {
            let (pool, endpoints) = (pool.clone(), endpoints.clone());
            in_tasks(tasks, messages, move |i| {
                insert_one(pool.clone(), endpoints.clone(), i)
            })
            .await?
        }
        Method::DispatchMany => {
            let (d, endpoints) = (d.clone(), endpoints.clone());
            in_tasks(tasks, messages.div_ceil(BATCH), move |b| {
                dispatch_batch(d.clone(), endpoints.clone(), b, messages)
            })
            .await?
        }
        Method::RawMultiInsert => {
            let (pool, endpoints) = (pool.clone(), endpoints.clone());
            in_tasks(tasks, messages.div_ceil(BATCH), move |b| {
                insert_batch(pool.clone(), endpoints.clone(), b, messages)
            })
            .await?
        }
    };

    let cpu = env.meter.since(&cpu_start);
    // Every row must really be there, or the rate means nothing.
    let rows: i64 = sqlx::query("SELECT count(*) FROM webhooks_dispatch_outbox")
        .fetch_one(&pool)
        .await?
        .try_get(0)?;
    if rows != i64::try_from(messages)? {
        return Err(format!("{method:?}: expected {messages} rows, found {rows}").into());
    }
    pool.close().await;
    env.drop_database(&db).await?;
    Ok((messages as f64 / elapsed.as_secs_f64(), cpu))
}

/// Runs `job(0..jobs)` from `tasks` concurrent tasks pulling job numbers from a shared counter; returns the
/// wall time from the first job's start to the last one's end.
pub async fn in_tasks<F, Fut>(tasks: usize, jobs: usize, job: F) -> Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..tasks {
        let (next, job) = (next.clone(), job.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    return Ok::<(), crate::env::BoxError>(());
                }
                job(i).await?;
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// A message id shaped like the library's (plain-insert baselines make their own, as a caller would).
pub fn message_id() -> String {
    format!("msg_{}", ulid::Ulid::new())
}

/// Dispatches message `i` to endpoint `i mod len`.
pub async fn dispatch_one<E: Executor>(
    d: Dispatcher<E>,
    endpoints: Arc<Vec<String>>,
    i: usize,
) -> Result<()> {
    let msg = NewMessage::new(&endpoints[i % endpoints.len()], EVENT_TYPE, payload(i as u64));
    d.dispatch(msg).await?;
    Ok(())
}

async fn insert_one(pool: PgPool, endpoints: Arc<Vec<String>>, i: usize) -> Result<()> {
    let body = serde_json::to_string(&payload(i as u64))?;
    sqlx::query(RAW_INSERT)
        .bind(message_id())
        .bind(&endpoints[i % endpoints.len()])
        .bind(EVENT_TYPE)
        .bind(body)
        .bind(None::<String>)
        .bind(Utc::now())
        .execute(&pool)
        .await?;
    Ok(())
}

/// Message numbers of batch `b` out of `total`.
pub fn batch_range(b: usize, total: usize) -> std::ops::Range<usize> {
    b * BATCH..((b + 1) * BATCH).min(total)
}

/// Dispatches batch `b` of `total` messages in one `dispatch_many` call.
pub async fn dispatch_batch<E: Executor>(
    d: Dispatcher<E>,
    endpoints: Arc<Vec<String>>,
    b: usize,
    total: usize,
) -> Result<()> {
    let batch = batch_range(b, total)
        .map(|i| NewMessage::new(&endpoints[i % endpoints.len()], EVENT_TYPE, payload(i as u64)))
        .collect();
    d.dispatch_many(batch).await?;
    Ok(())
}

async fn insert_batch(pool: PgPool, endpoints: Arc<Vec<String>>, b: usize, total: usize) -> Result<()> {
    let range = batch_range(b, total);
    let n = range.len();
    let mut ids = Vec::with_capacity(n);
    let mut eps = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    for i in range {
        ids.push(message_id());
        eps.push(endpoints[i % endpoints.len()].clone());
        bodies.push(serde_json::to_string(&payload(i as u64))?);
    }
    let now: DateTime<Utc> = Utc::now();
    sqlx::query(RAW_MULTI_INSERT)
        .bind(ids)
        .bind(eps)
        .bind(vec![EVENT_TYPE; n])
        .bind(bodies)
        .bind(vec![None::<String>; n])
        .bind(vec![now; n])
        .execute(&pool)
        .await?;
    Ok(())
}
