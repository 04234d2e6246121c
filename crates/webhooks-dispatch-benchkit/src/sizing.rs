//! Scenario 10: the worker's concurrency defaults against receivers that take time to answer.
//!
//! Little's law bounds a worker at `concurrency ÷ receiver latency` deliveries per second, and one endpoint
//! at `per-endpoint cap ÷ its latency`. Receivers in the field answer in tens to hundreds of milliseconds,
//! so the default `concurrency` decides whether a worker is held far below what its database can do. Each
//! round delivers N/2 messages over 100 endpoints whose receiver answers after [`DELAY`], with one worker at
//! the per-endpoint cap 16 and `concurrency` at the previous default (64) and at the current one; the figure
//! is delivered/s, as a share of the bound `concurrency ÷ DELAY` (what a worker with unlimited database
//! speed would reach) and of the zero-latency 100-endpoint figure of scenario 2 when it ran.

use std::time::Duration;

use webhooks_dispatch::{DEFAULT_CONCURRENCY, DEFAULT_PER_ENDPOINT_CONCURRENCY};

use crate::delivery::{self, Plan};
use crate::env::{Env, Tuning};
use crate::report::{Report, Samples};

const SCENARIO: &str = "10. sizing: concurrency against slow receivers";
/// How long the receiver takes to answer each delivery.
pub const DELAY: Duration = Duration::from_millis(20);
/// The default before this scenario existed, for comparison.
const PREVIOUS_DEFAULT: usize = 64;

/// Runs both settings, interleaved `rounds` times, and adds their figures.
pub async fn scenario(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize, rounds: usize) {
    let messages = (messages / 2).max(1);
    let settings = [PREVIOUS_DEFAULT, DEFAULT_CONCURRENCY];
    let mut samples = [Samples::default(), Samples::default()];
    for _ in 0..rounds {
        for (concurrency, samples) in settings.iter().zip(&mut samples) {
            let tuning = Tuning {
                concurrency: *concurrency,
                per_endpoint: DEFAULT_PER_ENDPOINT_CONCURRENCY,
                ..tuning.clone()
            };
            let mut plan = Plan::healthy("sizing", 1, messages);
            plan.receiver_delay = Some(DELAY);
            samples.push(delivery::run(env, &tuning, &plan).await);
        }
    }
    let ms = DELAY.as_millis();
    for (concurrency, samples) in settings.iter().zip(&samples) {
        let key = format!("sizing.concurrency_{concurrency}");
        let which = if *concurrency == DEFAULT_CONCURRENCY {
            "the default"
        } else {
            "the previous default"
        };
        let label =
            format!("concurrency {concurrency} ({which}), per-endpoint 16, receiver answering after {ms} ms");
        if !samples.report(report, SCENARIO, &key, &label) {
            continue;
        }
        let bound = *concurrency as f64 / DELAY.as_secs_f64();
        if let Some(v) = report.value(&key) {
            report.append_note(
                &key,
                &format!(
                    "{messages} msgs over 100 endpoints, 1 worker; Little's bound {concurrency} ÷ {ms} ms = {bound:.0}/s, \
                     reached {:.0} %",
                    100.0 * v / bound
                ),
            );
        }
        if report.value("delivery.one_worker").is_some() {
            report.ratio(&key, "delivery.one_worker", "zero-latency receivers (scenario 2)");
        }
    }
}
