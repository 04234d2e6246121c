//! Scenario 13: one tenant's endpoints all on a tarpit must not slow delivery to the other tenants.
//!
//! 100 healthy endpoints, each of its own owner, and 100 endpoints of one owner on a second receiver that
//! accepts requests and never responds (a tarpit); N messages round robin over all 200, so half go to the
//! tarpit; attempt timeout 2 s. Without per-owner caps the tarpit owner's endpoints (100 × the per-endpoint
//! cap, more than the worker's concurrency) could hold every delivery slot for the whole attempt deadline.
//! The clock stops when every healthy message has arrived. The reference is an all-healthy run of the same
//! healthy messages over the same 100 endpoints, interleaved with the tarpit runs. Dispatcher defaults apply
//! to the owner cap (half the concurrency) and to holding back failing endpoints.

use crate::delivery::{self, Plan};
use crate::env::{Env, Tuning, ENDPOINTS};
use crate::isolation::ATTEMPT_TIMEOUT_MS;
use crate::report::{Report, Samples};

const SCENARIO: &str = "13. tarpit owner";
/// The owner of every tarpit endpoint.
pub const TARPIT_OWNER: &str = "tarpit_tenant";

/// Runs the all-healthy reference and the run with the tarpit owner, interleaved `rounds` times; adds the
/// best of each and their ratio.
pub async fn scenario(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize, rounds: usize) {
    let tuning = &Tuning {
        attempt_timeout_ms: ATTEMPT_TIMEOUT_MS,
        ..tuning.clone()
    };
    let mut with_tarpit = Plan::healthy("tarpit_owner", 1, messages);
    with_tarpit.hanging_endpoints = ENDPOINTS;
    with_tarpit.hanging_owner = Some(TARPIT_OWNER);
    let healthy_messages = with_tarpit.healthy_messages();
    let reference = Plan::healthy("tarpit_ref", 1, healthy_messages);

    let (mut healthy, mut tarpit) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        healthy.push(delivery::run(env, tuning, &reference).await);
        tarpit.push(delivery::run(env, tuning, &with_tarpit).await);
    }
    let label = format!("all healthy: {healthy_messages} msgs over {ENDPOINTS} owners' endpoints");
    healthy.report(report, SCENARIO, "tarpit.all_healthy", &label);
    let label = format!("+ 1 owner's {ENDPOINTS} endpoints on a tarpit, others' msg/s");
    if tarpit.report(report, SCENARIO, "tarpit.with_tarpit_owner", &label) {
        let line = format!(
            "plus {} msgs to the tarpit owner (attempt timeout {} ms, owner cap {} of concurrency {}), left pending",
            messages - healthy_messages,
            tuning.attempt_timeout_ms,
            tuning.concurrency.div_ceil(2),
            tuning.concurrency,
        );
        report.append_note("tarpit.with_tarpit_owner", &line);
        report.ratio_at_least(
            "tarpit.with_tarpit_owner",
            "tarpit.all_healthy",
            "all healthy",
            0.9,
            ">= 90 % of all healthy",
        );
    }
}
