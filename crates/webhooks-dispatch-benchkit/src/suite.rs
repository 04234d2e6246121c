//! The whole run: every scenario in order on one server, one report.

use std::time::Duration;

use serde::Serialize;

use crate::env::{chain, Env, Result, Tuning};
use crate::machine::{self, Machine};
use crate::report::{Report, Samples};
use crate::{
    api, claimcost, delivery, disabled, enqueue, fanout, hot, isolation, latency, signing, sizing, sqlite,
    tablesize, tarpit,
};

/// Steady rate of the HTTP API's send → receipt latency measurement, as the brief fixes it.
pub const API_LATENCY_RATE: u32 = 50;

/// The scenarios that can be picked with `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1: dispatch / dispatch_many against plain inserts.
    Enqueue,
    /// 2: delivery with 1 and 2 workers, the two baselines, the optional non-durable run.
    Delivery,
    /// 3: latency at a steady rate.
    Latency,
    /// 4: delivery with a big finished history.
    TableSize,
    /// 5: delivery with hanging endpoints.
    Isolation,
    /// 6: all messages to one endpoint, against the raw claim + complete loop and 100 endpoints.
    HotEndpoint,
    /// 7: rows locked per claimed row and server time of the library's claim statement, per backlog.
    ClaimCost,
    /// 8: the service's HTTP API in-process: accepted/s, delivered/s, API latency, steady-rate latency.
    Api,
    /// 9: SQLite: enqueue against plain inserts, delivery, the service's batch endpoint.
    Sqlite,
    /// 10: the worker's concurrency defaults against receivers that answer after 20 ms.
    Sizing,
    /// 11: fan-out to 1–1,000 endpoints of one owner: enqueue time per event against `dispatch_many` of the
    /// same messages, and delivery of the fan-out messages.
    FanOut,
    /// 12: delivery with a backlog of pending messages on disabled endpoints, against empty tables.
    DisabledBacklog,
    /// 13: delivery to 100 owners while one more owner's 100 endpoints are on a tarpit, against all healthy.
    TarpitOwner,
    /// 14: signing cost per delivery (1 HMAC key, 10 HMAC keys, ed25519): CPU per delivery and throughput.
    Signing,
}

/// How big each scenario is.
#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    /// N: messages per enqueue and delivery measurement.
    pub messages: usize,
    /// Concurrent tasks enqueueing (scenario 1).
    pub enqueue_tasks: usize,
    /// Dispatch rate for the latency scenario.
    pub latency_rate_per_sec: u32,
    /// How long the latency scenario dispatches, in seconds.
    pub latency_secs: u64,
    /// Finished rows for the table-size scenario; `None` skips it.
    pub finished_rows: Option<u64>,
    /// Whether to add the non-durable `synchronous_commit=off` delivery run.
    pub synchronous_commit_off_variant: bool,
    /// Pending messages on disabled endpoints for scenario 12.
    pub disabled_backlog: u64,
    /// Scenarios to run; empty means all.
    pub only: Vec<Scenario>,
    /// Rounds of each delivery measurement.
    pub rounds: usize,
    /// The claim-cost backlogs' due counts are divided by this (1, or 10 for a smoke run).
    pub claim_backlog_divisor: usize,
}

impl Sizes {
    /// One line for the table's header.
    pub fn summary(&self) -> String {
        let history = match self.finished_rows {
            Some(rows) => format!("{rows} finished rows for scenario 4"),
            None => "scenario 4 skipped".to_owned(),
        };
        format!(
            "N = {} messages per measurement, {} enqueue tasks, latency at {} msg/s (API: {API_LATENCY_RATE} msg/s) \
             for {} s, {history}, claim-cost backlogs ÷ {}, {} disabled msgs for scenario 12, best of {} \
             round(s) per delivery figure",
            self.messages,
            self.enqueue_tasks,
            self.latency_rate_per_sec,
            self.latency_secs,
            self.claim_backlog_divisor,
            self.disabled_backlog,
            self.rounds
        )
    }

    fn wants(&self, s: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

/// Runs every scenario; a failing one is recorded in the report and the rest still run.
pub async fn run(env: &Env, tuning: &Tuning, sizes: &Sizes) -> Result<Report> {
    let machine = Machine::describe(env).await?;
    let mut report = Report::new(
        machine,
        tuning.clone(),
        serde_json::to_value(sizes)?,
        sizes.summary(),
    );
    let n = sizes.messages;

    if sizes.wants(Scenario::Enqueue) {
        progress("1/15 enqueue throughput");
        if let Err(e) = enqueue::run(env, &mut report, n, sizes.enqueue_tasks).await {
            report.error("enqueue", &chain(&*e));
        }
    }
    // Scenario 6's rounds run inside scenario 2's loop when both are wanted, interleaved with its references.
    let mut hot_rounds = Samples::default();
    let hot_inside_delivery = sizes.wants(Scenario::Delivery) && sizes.wants(Scenario::HotEndpoint);
    if sizes.wants(Scenario::Delivery) {
        progress("2/15 end-to-end delivery throughput and baselines");
        let hot = hot_inside_delivery.then_some(&mut hot_rounds);
        delivery::scenario(env, &mut report, tuning, n, sizes.rounds, hot).await;
        if sizes.synchronous_commit_off_variant {
            delivery::synchronous_commit_off(env, &mut report, tuning, n).await;
        }
    }
    if sizes.wants(Scenario::Latency) {
        progress("3/15 latency");
        let duration = Duration::from_secs(sizes.latency_secs);
        latency::scenario(env, &mut report, tuning, sizes.latency_rate_per_sec, duration).await;
    }
    if sizes.wants(Scenario::TableSize) {
        match sizes.finished_rows {
            Some(rows) => {
                progress("4/15 table-size independence");
                tablesize::scenario(env, &mut report, tuning, n, rows, sizes.rounds).await;
            }
            None => progress("4/15 table-size independence: skipped (--skip-million)"),
        }
    }
    if sizes.wants(Scenario::Isolation) {
        progress("5/15 slow-endpoint isolation");
        isolation::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }
    if hot_inside_delivery {
        progress("6/15 hot endpoint (measured in scenario 2's rounds)");
        hot::report(&mut report, &hot_rounds, n);
    } else if sizes.wants(Scenario::HotEndpoint) {
        progress("6/15 hot endpoint, with its references");
        hot::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }
    if sizes.wants(Scenario::ClaimCost) {
        progress("7/15 claim cost");
        claimcost::scenario(env, &mut report, sizes.claim_backlog_divisor).await;
    }
    if sizes.wants(Scenario::Api) {
        progress("8/15 HTTP API");
        api::scenario(env, &mut report, n, sizes.rounds, sizes.latency_secs).await;
    }
    if sizes.wants(Scenario::Sqlite) {
        progress("9/15 SQLite");
        sqlite::scenario(env, &mut report, tuning, n, sizes.rounds, sizes.enqueue_tasks).await;
    }
    if sizes.wants(Scenario::Sizing) {
        progress("10/15 sizing");
        sizing::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }
    if sizes.wants(Scenario::FanOut) {
        progress("11/15 fan-out");
        fanout::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }
    if sizes.wants(Scenario::DisabledBacklog) {
        progress("12/15 disabled-endpoint backlog");
        let backlog = sizes.disabled_backlog;
        disabled::scenario(env, &mut report, tuning, n, backlog, sizes.rounds).await;
    }

    if sizes.wants(Scenario::TarpitOwner) {
        progress("13/15 tarpit owner");
        tarpit::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }

    if sizes.wants(Scenario::Signing) {
        progress("14/15 signing cost");
        signing::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }

    progress("15/15 peak memory");
    memory(&mut report);
    env.drop_leftovers().await;
    Ok(report)
}

/// Scenario 15: this process's peak memory, always reported.
fn memory(report: &mut Report) {
    match machine::peak_rss_mib() {
        Some(mib) => {
            report
                .add(
                    "15. memory",
                    "memory.peak_rss",
                    "peak resident memory of this process (VmHWM)",
                    mib,
                    "MiB",
                )
                .note("includes the in-process receivers, which keep every request they saw");
        }
        None => report.error("memory", &"no VmHWM in /proc/self/status"),
    }
}

/// Progress goes to stderr so stdout holds only the table.
fn progress(step: &str) {
    eprintln!("[bench] {step}");
}
