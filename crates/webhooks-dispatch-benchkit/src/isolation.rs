//! Scenario 5: a few endpoints that never answer must not slow delivery to the rest.
//!
//! 100 endpoints, 10 of them on a second receiver that accepts requests and never responds; N messages round
//! robin over all 100, attempt timeout 2 s (in both runs). The clock stops when every message for the 90
//! answering endpoints has arrived. The reference is an all-healthy run of the same healthy messages over the
//! same 90 endpoints, interleaved with the hanging runs (the machine is shared, see `tablesize`). Hanging messages time out,
//! are rescheduled by the retry policy (first retry after a minute, so not within the run) and are left pending
//! when the worker stops; shutdown waits at most the tuning's grace for attempts still hanging.

use crate::delivery::{self, Plan};
use crate::env::{Env, Tuning, ENDPOINTS};
use crate::report::{Report, Samples};

const SCENARIO: &str = "5. slow-endpoint isolation";
/// Endpoints that never answer, out of 100.
pub const HANGING: usize = 10;
/// The attempt deadline for both runs of this scenario, as the brief fixes it.
pub const ATTEMPT_TIMEOUT_MS: u64 = 2_000;

/// Runs the all-healthy reference and the run with hanging endpoints, interleaved `rounds` times; adds the
/// best of each and their ratio.
pub async fn scenario(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize, rounds: usize) {
    let tuning = &Tuning {
        attempt_timeout_ms: ATTEMPT_TIMEOUT_MS,
        ..tuning.clone()
    };
    let mut with_hanging = Plan::healthy("isolation_hang", 1, messages);
    with_hanging.healthy_endpoints = ENDPOINTS - HANGING;
    with_hanging.hanging_endpoints = HANGING;
    let healthy_messages = with_hanging.healthy_messages();
    let mut reference = Plan::healthy("isolation_ref", 1, healthy_messages);
    reference.healthy_endpoints = ENDPOINTS - HANGING;

    let (mut healthy, mut hanging) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        healthy.push(delivery::run(env, tuning, &reference).await);
        hanging.push(delivery::run(env, tuning, &with_hanging).await);
    }
    let label = format!(
        "all healthy: {healthy_messages} msgs over {} endpoints",
        ENDPOINTS - HANGING
    );
    healthy.report(report, SCENARIO, "isolation.all_healthy", &label);
    let label = format!(
        "{} healthy + {HANGING} hanging endpoints, healthy msg/s",
        ENDPOINTS - HANGING
    );
    if hanging.report(report, SCENARIO, "isolation.with_hanging", &label) {
        let line = format!(
            "plus {} msgs to the hanging endpoints (attempt timeout {} ms), left pending at the end",
            messages - healthy_messages,
            tuning.attempt_timeout_ms
        );
        report.append_note("isolation.with_hanging", &line);
        report.ratio_at_least(
            "isolation.with_hanging",
            "isolation.all_healthy",
            "all healthy",
            0.9,
            ">= 90 % of all healthy",
        );
    }
}
