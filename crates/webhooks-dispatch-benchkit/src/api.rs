//! Scenario 8: the HTTP API of the real service (see `service`), with its worker, on the benchmark's durable
//! PostgreSQL.
//!
//! Throughput, for one endpoint and for 100: a fresh database and service, a fresh receiver, endpoints
//! registered through `POST /v1/endpoints` (untimed), then 32 keep-alive clients on the load generator's
//! own runtime POST N single messages to `/v1/messages` (request bodies built before the clock starts). The
//! service's worker delivers while the clients send. Accepted/s is N over the time from the first request
//! to the last answer; delivered/s is N over the time from the first request to the receiver's last
//! arrival; API latency is per request, sending to answer read, under that load. Afterwards the service is
//! stopped gracefully and checked: every answer was 201, the receiver saw exactly the returned ids once
//! each, and the database agrees (each delivered once, no failed attempt, nothing leased).
//!
//! Baselines from the same run, interleaved round by round: the library's `dispatch` from 32 tasks (one
//! pool connection each, as in scenario 1) to the same number of endpoints, and the raw claim + complete
//! loop (scenario 2's, measured here when scenario 2 does not run).
//!
//! Latency: a fresh service with 100 endpoints, a few warm-up messages, then single messages at a steady
//! 50 msg/s (open loop) over the same client pool; send → receipt is from the request's scheduled send time
//! to the receiver's `Received.at` for its `webhook-id`, both `Instant`s of this process.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::Row as _;
use webhooks_dispatch_testkit::receiver::{Receiver, Reply};

use crate::baseline;
use crate::delivery;
use crate::enqueue;
use crate::env::{chain, payload, Database, Env, Result, ENDPOINTS, EVENT_TYPE};
use crate::latency::percentile;
use crate::report::{Report, Sample, Samples};
use crate::service::{self, LoadGen, Service};

const SCENARIO: &str = "8. HTTP API (service in-process, PostgreSQL)";
/// Concurrent keep-alive clients, as the brief fixes them.
pub const CLIENTS: usize = 32;
/// Messages before the latency measurement starts (connections, pools, LISTEN).
const WARM_UP: usize = 20;
/// The brief's targets.
const ACCEPT_TARGET: f64 = 0.8;
const DELIVER_TARGET: f64 = 0.5;
const STEADY_P50_MS: f64 = 3.0;
const STEADY_P99_MS: f64 = 7.0;

/// Where the service keeps its data, and how a run is checked against it afterwards.
pub enum Store {
    /// A fresh database on the benchmark's server, with a small pool of our own for the checks.
    Postgres {
        /// The database (boxed: its connect options dwarf the other variant).
        db: Box<Database>,
        /// Our connections to it.
        pool: PgPool,
    },
    /// A fresh SQLite file in a scratch directory (the system's temporary directory, like the cluster).
    Sqlite {
        /// Removed when dropped.
        dir: tempfile::TempDir,
    },
}

impl Store {
    /// A fresh PostgreSQL database named after `label`.
    pub async fn postgres(env: &Env, label: &str) -> Result<Store> {
        let db = env.fresh_database(label).await?;
        let pool = env.pool(&db, 2, false).await?;
        Ok(Store::Postgres {
            db: Box::new(db),
            pool,
        })
    }

    /// A fresh SQLite file.
    pub fn sqlite() -> Result<Store> {
        Ok(Store::Sqlite {
            dir: tempfile::tempdir()?,
        })
    }

    fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("service.db")
    }

    fn url(&self, env: &Env) -> Result<String> {
        match self {
            Store::Postgres { db, .. } => env.database_url(db),
            Store::Sqlite { dir } => Ok(format!("sqlite://{}", Store::sqlite_path(dir).display())),
        }
    }

    /// The database's clock now (SQLite files are fresh per run, so they need no starting point).
    async fn now(&self) -> Result<Option<DateTime<Utc>>> {
        match self {
            Store::Postgres { pool, .. } => Ok(Some(
                sqlx::query("SELECT now()").fetch_one(pool).await?.try_get(0)?,
            )),
            Store::Sqlite { .. } => Ok(None),
        }
    }

    /// The database agrees with the receiver: `expected` messages delivered once each, nothing else.
    async fn verify(
        &self,
        receiver: &Receiver,
        since: Option<DateTime<Utc>>,
        expected: usize,
        label: &str,
    ) -> Result<()> {
        match (self, since) {
            (Store::Postgres { pool, .. }, Some(since)) => {
                delivery::verify(pool, receiver, since, expected, label).await
            }
            (Store::Sqlite { dir }, _) => {
                crate::sqlite::verify_file(&Store::sqlite_path(dir), receiver, expected, label).await
            }
            (Store::Postgres { .. }, None) => Err("no starting time to verify from".into()),
        }
    }

    /// Drops the database (or removes the file).
    pub async fn close(self, env: &Env) -> Result<()> {
        match self {
            Store::Postgres { db, pool } => {
                pool.close().await;
                env.drop_database(&db).await
            }
            Store::Sqlite { dir } => Ok(dir.close()?),
        }
    }
}

/// How the clients send.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// `POST /v1/messages`, one message per request.
    Single,
    /// `POST /v1/messages/batch`, this many messages per request.
    Batch(usize),
}

/// What one throughput run saw.
pub struct Run {
    /// Accepted messages per second, with its note.
    pub accepted: Sample,
    /// Delivered (received) messages per second over the same run, with its note.
    pub delivered: Sample,
    /// Per-request API latency, p50 and p99.
    pub api_p50: Duration,
    /// See `api_p50`.
    pub api_p99: Duration,
}

/// Request bodies for `messages` messages round robin over `endpoints`, in the given shape.
fn bodies(endpoints: &[String], messages: usize, shape: Shape) -> Vec<Bytes> {
    let item = |i: usize| {
        serde_json::json!({
            "endpoint_id": endpoints[i % endpoints.len()],
            "event_type": EVENT_TYPE,
            "payload": payload(i as u64),
        })
    };
    match shape {
        Shape::Single => (0..messages).map(|i| Bytes::from(item(i).to_string())).collect(),
        Shape::Batch(per) => (0..messages.div_ceil(per.max(1)))
            .map(|b| {
                let items: Vec<_> = (b * per..((b + 1) * per).min(messages)).map(item).collect();
                Bytes::from(serde_json::json!({ "messages": items }).to_string())
            })
            .collect(),
    }
}

/// Endpoint URLs on a receiver: IP literals (the service resolves host names through the system, which
/// the benchmark must not use), one path per endpoint.
pub fn urls(receiver: &Receiver, endpoints: usize) -> Vec<String> {
    (0..endpoints)
        .map(|i| format!("https://127.0.0.1:{}/e{i}", receiver.port()))
        .collect()
}

/// One throughput run on a fresh `store`; see the module docs. The store is closed afterwards.
pub async fn measure(
    env: &Env,
    loadgen: &LoadGen,
    store: Store,
    endpoints: usize,
    messages: usize,
    shape: Shape,
) -> Result<Run> {
    let result = measure_on(env, loadgen, &store, endpoints, messages, shape).await;
    store.close(env).await?;
    result
}

async fn measure_on(
    env: &Env,
    loadgen: &LoadGen,
    store: &Store,
    endpoints: usize,
    messages: usize,
    shape: Shape,
) -> Result<Run> {
    let label = format!("API, {endpoints} endpoint(s), {shape:?}");
    let service = Service::start(env, store.url(env)?).await?;
    let receiver = env.receiver(Reply::default()).await?;
    let ids = service::register(service.addr, &urls(&receiver, endpoints)).await?;
    let since = store.now().await?;
    let (path, bodies) = match shape {
        Shape::Single => ("/v1/messages", bodies(&ids, messages, shape)),
        Shape::Batch(_) => ("/v1/messages/batch", bodies(&ids, messages, shape)),
    };
    let requests = bodies.len();

    let (cpu_start, threads_start) = (env.meter.snapshot(), loadgen.threads.snapshot());
    let load = loadgen
        .run(service::closed_loop(service.addr, CLIENTS, path, bodies))
        .await?;
    let (accept_cpu, accept_loadgen) = (
        env.meter.since(&cpu_start),
        loadgen.threads.cores_since(&threads_start),
    );
    let timeout = Duration::from_secs(60 + messages as u64 / 100);
    let arrived = receiver.wait_for(messages, timeout).await;
    let run_cpu = env.meter.since(&cpu_start);
    service.stop().await?;
    if !arrived {
        return Err(format!(
            "{label}: receiver counted {} of {messages} within {timeout:?}",
            receiver.count()
        )
        .into());
    }

    let delivered_in = check(store, &receiver, &load, since, messages, &label).await?;

    let mut latencies = load.latencies;
    latencies.sort_unstable();
    let accepted_note = format!(
        "{messages} msgs in {requests} request(s) from {} keep-alive client(s) in {:.2} s, all 201; load generator \
         {accept_loadgen:.2} cores (inside the bench process figure)\n{}",
        CLIENTS.min(requests),
        load.elapsed.as_secs_f64(),
        accept_cpu.describe()
    );
    let delivered_note = format!(
        "first request → last arrival {:.2} s; receiver saw every returned id once, DB agrees (delivered once, \
         nothing leased, no failed attempt)\n{}",
        delivered_in.as_secs_f64(),
        run_cpu.describe()
    );
    Ok(Run {
        accepted: Sample {
            rate: messages as f64 / load.elapsed.as_secs_f64(),
            note: accepted_note,
        },
        delivered: Sample {
            rate: messages as f64 / delivered_in.as_secs_f64().max(1e-9),
            note: delivered_note,
        },
        api_p50: percentile(&latencies, 50.0),
        api_p99: percentile(&latencies, 99.0),
    })
}

/// After a run: the receiver saw exactly the ids the API returned, once each, and the database agrees.
/// Returns the time from the first request to the last arrival.
async fn check(
    store: &Store,
    receiver: &Receiver,
    load: &service::Closed,
    since: Option<DateTime<Utc>>,
    messages: usize,
    label: &str,
) -> Result<Duration> {
    let returned: HashSet<String> = load.ids.iter().cloned().collect();
    let received = delivery::received_once(receiver, messages, label)?;
    if load.ids.len() != messages || returned != received {
        return Err(format!(
            "{label}: the API returned {} ids ({} distinct); the receiver's {} ids are not the same set",
            load.ids.len(),
            returned.len(),
            received.len()
        )
        .into());
    }
    store.verify(receiver, since, messages, label).await?;
    let last = receiver
        .received()
        .iter()
        .map(|r| r.at)
        .max()
        .ok_or("nothing received")?;
    let delivered_in = last.saturating_duration_since(load.started);
    Ok(delivered_in)
}

/// The figures of one endpoint layout over all rounds.
#[derive(Default)]
struct Layout {
    accepted: Samples,
    delivered: Samples,
    dispatch: Samples,
    /// (accepted/s, p50, p99) per successful round: the latencies reported are the best round's.
    latencies: Vec<(f64, Duration, Duration)>,
}

/// Runs scenario 8 and adds its figures.
pub async fn scenario(env: &Env, report: &mut Report, messages: usize, rounds: usize, latency_secs: u64) {
    let loadgen = match LoadGen::new() {
        Ok(l) => l,
        Err(e) => return report.error("HTTP API: load generator", &chain(&*e)),
    };
    let measure_raw_db = report.value("baseline.raw_db").is_none();
    let mut layouts = [(1, Layout::default()), (ENDPOINTS, Layout::default())];
    let mut raw_db = Samples::default();
    for _ in 0..rounds {
        for (endpoints, layout) in &mut layouts {
            let label = if *endpoints == 1 { "api_one" } else { "api_many" };
            let run = match Store::postgres(env, label).await {
                Ok(store) => measure(env, &loadgen, store, *endpoints, messages, Shape::Single).await,
                Err(e) => Err(e),
            };
            match run {
                Ok(run) => {
                    layout
                        .latencies
                        .push((run.accepted.rate, run.api_p50, run.api_p99));
                    layout.accepted.push(Ok(run.accepted));
                    layout.delivered.push(Ok(run.delivered));
                }
                Err(e) => {
                    let why = e.to_string();
                    layout.accepted.push(Err(why.clone().into()));
                    layout.delivered.push(Err(why.into()));
                }
            }
            let dispatched = enqueue::dispatch_rate(env, messages, CLIENTS, *endpoints).await;
            layout.dispatch.push(dispatched.map(|(rate, cpu)| Sample {
                rate,
                note: format!(
                    "{CLIENTS} tasks, one pool connection each, no worker running\n{}",
                    cpu.describe()
                ),
            }));
        }
        if measure_raw_db {
            raw_db.push(baseline::raw_db(env, messages).await);
        }
    }
    if measure_raw_db {
        let label = "reference: raw claim + complete loop (scenario 2)";
        raw_db.report(report, SCENARIO, "baseline.raw_db", label);
    }
    for (endpoints, layout) in &layouts {
        add_layout(report, *endpoints, layout, messages);
    }
    steady(env, report, &loadgen, latency_secs).await;
}

fn add_layout(report: &mut Report, endpoints: usize, layout: &Layout, messages: usize) {
    let name = if endpoints == 1 {
        "one_endpoint"
    } else {
        "endpoints"
    };
    let n = format!("{endpoints} endpoint{}", if endpoints == 1 { "" } else { "s" });
    let base = format!("api.dispatch_{CLIENTS}.{name}");
    let label = format!("baseline: library dispatch, {CLIENTS} tasks, {n}");
    layout.dispatch.report(report, SCENARIO, &base, &label);
    let key = format!("api.{name}.accepted");
    let label = format!("POST /v1/messages, {CLIENTS} clients, {n}: accepted");
    if layout.accepted.report(report, SCENARIO, &key, &label) {
        report.ratio(&key, &base, "library dispatch");
        if let (Some(v), Some(b)) = (report.value(&key), report.value(&base)) {
            report.target(&key, ">= 0.8× library dispatch", v >= ACCEPT_TARGET * b);
        }
    }
    let key = format!("api.{name}.delivered");
    let label = format!("  delivered end to end, same run ({messages} msgs)");
    if layout.delivered.report(report, SCENARIO, &key, &label) {
        report.ratio(&key, "baseline.raw_db", "raw claim+complete loop");
        if let (Some(v), Some(b)) = (report.value(&key), report.value("baseline.raw_db")) {
            report.target(&key, ">= 0.5× raw claim+complete", v >= DELIVER_TARGET * b);
        }
    }
    if let Some(&(_, p50, p99)) = layout.latencies.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        report
            .add(
                SCENARIO,
                &format!("api.{name}.latency_p50"),
                "  API latency under that load, p50",
                ms(p50),
                "ms",
            )
            .note("send → answer read, per request, in the round with the best accepted/s");
        report.add(
            SCENARIO,
            &format!("api.{name}.latency_p99"),
            "  API latency under that load, p99",
            ms(p99),
            "ms",
        );
    }
}

/// The steady-rate latency measurement and its figures.
async fn steady(env: &Env, report: &mut Report, loadgen: &LoadGen, secs: u64) {
    let rate = crate::suite::API_LATENCY_RATE;
    let total = usize::try_from(u64::from(rate) * secs).unwrap_or(usize::MAX);
    let store = match Store::postgres(env, "api_latency").await {
        Ok(store) => store,
        Err(e) => return report.error("HTTP API latency", &chain(&*e)),
    };
    let measured = steady_on(env, loadgen, &store, rate, total).await;
    if let Err(e) = store.close(env).await {
        report.error("HTTP API latency: dropping the database", &chain(&*e));
    }
    let (mut receipt, mut api) = match measured {
        Ok(m) => m,
        Err(e) => return report.error("HTTP API latency", &chain(&*e)),
    };
    receipt.sort_unstable();
    api.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99) = (ms(percentile(&receipt, 50.0)), ms(percentile(&receipt, 99.0)));
    let note = format!(
        "{total} msgs at {rate}/s over {secs} s after {WARM_UP} warm-up msgs, {ENDPOINTS} endpoints, worker woken by \
         LISTEN/NOTIFY; API answer p50 / p99 {:.2} / {:.2} ms",
        ms(percentile(&api, 50.0)),
        ms(percentile(&api, 99.0))
    );
    let label = format!("send → received at {rate} msg/s, p50");
    report
        .add(SCENARIO, "api.latency.p50", &label, p50, "ms")
        .target("<= 3 ms", p50 <= STEADY_P50_MS)
        .note(note);
    report
        .add(SCENARIO, "api.latency.p99", "  p99", p99, "ms")
        .target("<= 7 ms", p99 <= STEADY_P99_MS);
    let max = receipt.last().copied().map_or(0.0, ms);
    report.add(SCENARIO, "api.latency.max", "  max", max, "ms");
}

/// Returns (send → receipt, send → answer) for every measured message.
async fn steady_on(
    env: &Env,
    loadgen: &LoadGen,
    store: &Store,
    rate: u32,
    total: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let service = Service::start(env, store.url(env)?).await?;
    let receiver = env.receiver(Reply::default()).await?;
    let ids = service::register(service.addr, &urls(&receiver, ENDPOINTS)).await?;
    let since = store.now().await?;
    let mut all = bodies(&ids, WARM_UP + total, Shape::Single);
    let measured = all.split_off(WARM_UP);
    loadgen
        .run(service::closed_loop(service.addr, 4, "/v1/messages", all))
        .await?;
    if !receiver.wait_for(WARM_UP, Duration::from_secs(30)).await {
        return Err("warm-up messages were not delivered within 30 s".into());
    }
    let sent = loadgen
        .run(service::steady(service.addr, CLIENTS, rate, measured))
        .await?;
    let arrived = receiver.wait_for(WARM_UP + total, Duration::from_secs(30)).await;
    service.stop().await?;
    if !arrived {
        return Err(format!(
            "only {} of {} messages arrived",
            receiver.count(),
            WARM_UP + total
        )
        .into());
    }
    delivery::received_once(&receiver, WARM_UP + total, "API latency")?;
    store
        .verify(&receiver, since, WARM_UP + total, "API latency")
        .await?;
    let at: std::collections::HashMap<String, std::time::Instant> = receiver
        .received()
        .into_iter()
        .filter_map(|r| Some((r.headers.get("webhook-id")?.to_str().ok()?.to_owned(), r.at)))
        .collect();
    let mut receipt = Vec::with_capacity(total);
    for s in &sent {
        let got = at
            .get(&s.id)
            .ok_or_else(|| format!("message {} was not received", s.id))?;
        receipt.push(got.saturating_duration_since(s.at));
    }
    if receipt.len() != total {
        return Err(format!("matched {} of {total} deliveries to requests", receipt.len()).into());
    }
    Ok((receipt, sent.iter().map(|s| s.api_latency).collect()))
}

#[cfg(test)]
mod tests {
    use super::{bodies, Shape};

    #[test]
    fn batches_split_the_messages_and_single_bodies_carry_one_each() {
        let endpoints = vec!["ep_a".to_owned(), "ep_b".to_owned()];
        let batch = bodies(&endpoints, 2_500, Shape::Batch(1_000));
        let sizes: Vec<usize> = batch
            .iter()
            .map(|b| {
                serde_json::from_slice::<serde_json::Value>(b).unwrap()["messages"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, vec![1_000, 1_000, 500]);
        let single = bodies(&endpoints, 3, Shape::Single);
        let second: serde_json::Value = serde_json::from_slice(&single[1]).unwrap();
        assert_eq!((single.len(), second["endpoint_id"].as_str()), (3, Some("ep_b")));
    }
}
