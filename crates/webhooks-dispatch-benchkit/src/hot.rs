//! Scenario 6: one hot endpoint. The whole backlog (N messages) goes to a single endpoint, with the
//! per-endpoint cap at the service default (16) and every other worker setting as in scenario 2. A service
//! whose biggest customer gets a burst must deliver it about as fast as the same volume spread over many
//! endpoints: the cap bounds what is in flight to that endpoint, not how fast the queue behind it moves.
//!
//! Each round is the delivery measurement of scenario 2 (fresh database and receiver, enqueue untimed, one
//! worker, clock until the receiver has counted every message, then the database and the receiver are checked
//! to agree: each message delivered once, nothing leased, no failed attempt). Rounds are interleaved with the
//! figures they are compared with — scenario 2's 100-endpoint run and the raw claim + complete loop — inside
//! scenario 2's own loop when that scenario runs, or in a loop of their own here when it does not; the best
//! round of each counts.

use crate::baseline;
use crate::delivery::{self, Plan};
use crate::env::{Env, Result, Tuning};
use crate::report::{Report, Sample, Samples};

const SCENARIO: &str = "6. hot endpoint";
/// In flight to one endpoint at once: the library's and the service's default.
pub const PER_ENDPOINT: usize = webhooks_dispatch::DEFAULT_PER_ENDPOINT_CONCURRENCY;
/// The brief's targets: hot-endpoint msg/s over the raw claim + complete loop, and over 100 endpoints.
const VS_RAW_DB_TARGET: f64 = 0.6;
const VS_DELIVERY_TARGET: f64 = 0.9;

/// One round: `messages` to a single endpoint, one worker, the per-endpoint cap at [`PER_ENDPOINT`].
pub async fn round(env: &Env, tuning: &Tuning, messages: usize) -> Result<Sample> {
    let tuning = Tuning {
        per_endpoint: PER_ENDPOINT,
        ..tuning.clone()
    };
    let mut plan = Plan::healthy("hot", 1, messages);
    plan.healthy_endpoints = 1;
    delivery::run(env, &tuning, &plan).await
}

/// Runs the scenario without scenario 2: its own interleaved rounds of the hot run, the 100-endpoint run and
/// the raw database loop. The two references are reported here under scenario 2's keys (they are the same
/// measurements), so the ratios read the same either way.
pub async fn scenario(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize, rounds: usize) {
    let (mut hot, mut spread, mut db) = (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..rounds {
        spread.push(delivery::run(env, tuning, &Plan::healthy("deliver1", 1, messages)).await);
        hot.push(round(env, tuning, messages).await);
        db.push(baseline::raw_db(env, messages).await);
    }
    let label = format!(
        "reference: 1 worker, 100 endpoints, per-endpoint cap {}",
        tuning.per_endpoint
    );
    spread.report(report, SCENARIO, "delivery.one_worker", &label);
    let label = "reference: raw claim + complete loop";
    db.report(report, SCENARIO, "baseline.raw_db", label);
    self::report(report, &hot, messages);
}

/// Adds the best hot round and its two ratios, with pass/miss against the targets.
pub fn report(report: &mut Report, hot: &Samples, messages: usize) {
    let key = "hot.one_endpoint";
    let label = format!("1 worker, {messages} msgs to ONE endpoint, per-endpoint cap {PER_ENDPOINT}");
    if !hot.report(report, SCENARIO, key, &label) {
        return;
    }
    report.ratio(key, "baseline.raw_db", "raw claim+complete loop");
    if let (Some(v), Some(db)) = (report.value(key), report.value("baseline.raw_db")) {
        report.target(key, ">= 0.6× raw claim+complete", v >= VS_RAW_DB_TARGET * db);
    }
    if let (Some(v), Some(spread)) = (report.value(key), report.value("delivery.one_worker")) {
        let ratio = v / spread;
        report
            .add(
                SCENARIO,
                "hot.one_endpoint.vs_delivery",
                "1 endpoint ÷ 100 endpoints (scenario 2, same run)",
                ratio,
                "×",
            )
            .target(">= 0.9×", ratio >= VS_DELIVERY_TARGET);
    }
}
