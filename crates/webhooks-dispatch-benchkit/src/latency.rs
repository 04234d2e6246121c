//! Scenario 3: latency from enqueue to arrival at a steady, moderate rate.
//!
//! A worker with a `SqlxListener` (woken by the dispatches' NOTIFYs) runs against an empty queue; a separate
//! "application" pool dispatches one message every 10 ms (100 msg/s) for the configured duration, each from
//! its own task so a slow commit does not delay the next tick. Latency is from `dispatch` returning to the
//! receiver's `Received.at` for that `webhook-id` — two `Instant`s of this process, so no clock skew. A few
//! warm-up messages go first so connection setup (pools, LISTEN) is not counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use webhooks_dispatch::store::sqlx::SqlxListener;
use webhooks_dispatch::{NewMessage, Worker};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::env::{chain, endpoint_url, payload, setup_endpoints, Env, Result, Tuning, ENDPOINTS, EVENT_TYPE};
use crate::report::Report;

const SCENARIO: &str = "3. latency at 100 msg/s";
/// Messages dispatched and delivered before measuring.
const WARM_UP: usize = 20;
/// The brief's targets, milliseconds.
const P50_TARGET_MS: f64 = 5.0;
const P99_TARGET_MS: f64 = 25.0;

/// Measures and adds p50, p99 and max.
pub async fn scenario(
    env: &Env,
    report: &mut Report,
    tuning: &Tuning,
    rate_per_sec: u32,
    duration: Duration,
) {
    match measure(env, tuning, rate_per_sec, duration).await {
        Ok(mut latencies) => {
            latencies.sort_unstable();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let note = format!(
                "{} msgs at {rate_per_sec}/s over {:.0} s, after {WARM_UP} warm-up msgs; worker woken by LISTEN/NOTIFY",
                latencies.len(),
                duration.as_secs_f64()
            );
            let p50 = ms(percentile(&latencies, 50.0));
            let p99 = ms(percentile(&latencies, 99.0));
            report
                .add(
                    SCENARIO,
                    "latency.p50",
                    "p50, dispatch returned → received",
                    p50,
                    "ms",
                )
                .target("<= 5 ms", p50 <= P50_TARGET_MS)
                .note(note);
            report
                .add(SCENARIO, "latency.p99", "p99", p99, "ms")
                .target("<= 25 ms", p99 <= P99_TARGET_MS);
            let max = latencies.last().copied().map_or(0.0, ms);
            report.add(SCENARIO, "latency.max", "max", max, "ms");
        }
        Err(e) => report.error("latency", &chain(&*e)),
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the steady load and returns one latency per message.
async fn measure(env: &Env, tuning: &Tuning, rate_per_sec: u32, duration: Duration) -> Result<Vec<Duration>> {
    let db = env.fresh_database("latency").await?;
    let app_pool = env.pool(&db, 8, false).await?;
    // The application side: default configuration, NOTIFY on (the library's 5 ms debounce).
    let app = env.builder(app_pool.clone()).build();
    let receiver = env.receiver(Reply::default()).await?;
    let urls: Vec<String> = (0..ENDPOINTS).map(|i| endpoint_url(receiver.port(), i)).collect();
    let endpoints = Arc::new(setup_endpoints(&app, &urls).await?);

    let worker_pool = env.pool(&db, tuning.worker_pool_size, false).await?;
    let listener = SqlxListener::connect(&worker_pool).await?;
    let worker = Worker::new(tuning.dispatcher(env, worker_pool.clone()))
        .listener(listener)
        .claim_batch(tuning.claim_batch)
        .poll_interval(Duration::from_millis(tuning.poll_interval_ms))
        .shutdown_grace(Duration::from_millis(tuning.shutdown_grace_ms));
    let (stop, mut stopped) = watch::channel(false);
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));

    for i in 0..WARM_UP {
        app.dispatch(NewMessage::new(
            &endpoints[i % ENDPOINTS],
            EVENT_TYPE,
            payload(i as u64),
        ))
        .await?;
    }
    if !receiver.wait_for(WARM_UP, Duration::from_secs(30)).await {
        return Err("warm-up messages were not delivered within 30 s".into());
    }

    let total = (u128::from(rate_per_sec) * duration.as_millis() / 1000) as usize;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate_per_sec);
    // Catch up after a stall instead of skipping, so the average rate stays what was asked for.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut dispatches = JoinSet::new();
    for i in 0..total {
        ticks.tick().await;
        let (app, endpoints, sent) = (app.clone(), endpoints.clone(), sent.clone());
        let n = WARM_UP + i;
        dispatches.spawn(async move {
            let msg = NewMessage::new(&endpoints[n % ENDPOINTS], EVENT_TYPE, payload(n as u64));
            let id = app.dispatch(msg).await?.message_id;
            let returned = Instant::now();
            sent.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, returned);
            Ok::<(), crate::env::BoxError>(())
        });
    }
    while let Some(done) = dispatches.join_next().await {
        done??;
    }
    let arrived = receiver.wait_for(WARM_UP + total, Duration::from_secs(30)).await;
    let _ = stop.send(true);
    handle.await??;
    if !arrived {
        return Err(format!(
            "only {} of {} messages arrived",
            receiver.count(),
            WARM_UP + total
        )
        .into());
    }

    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    let mut latencies = Vec::with_capacity(total);
    for r in receiver.received() {
        let id = r.headers.get("webhook-id").and_then(|v| v.to_str().ok());
        if let Some(dispatched) = id.and_then(|id| sent.get(id)) {
            // The worker may deliver before `dispatch` has returned (it wakes on the commit's NOTIFY while the
            // call is still on its way back); that counts as zero.
            latencies.push(r.at.saturating_duration_since(*dispatched));
        }
    }
    if latencies.len() != total {
        return Err(format!("matched {} of {total} deliveries to dispatches", latencies.len()).into());
    }
    worker_pool.close().await;
    app_pool.close().await;
    drop(receiver);
    env.drop_database(&db).await?;
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(super::percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(super::percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(super::percentile(&v[..1], 99.0), Duration::from_millis(1));
    }
}
