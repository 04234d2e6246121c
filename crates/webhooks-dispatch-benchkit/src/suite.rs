//! The whole run: every scenario in order on one server, one report.

use std::time::Duration;

use serde::Serialize;

use crate::env::{Env, Result, Tuning};
use crate::machine::{self, Machine};
use crate::report::Report;
use crate::{delivery, enqueue, isolation, latency, tablesize};

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
    /// Scenarios to run; empty means all.
    pub only: Vec<Scenario>,
    /// Rounds of each delivery measurement.
    pub rounds: usize,
}

impl Sizes {
    /// One line for the table's header.
    pub fn summary(&self) -> String {
        let history = match self.finished_rows {
            Some(rows) => format!("{rows} finished rows for scenario 4"),
            None => "scenario 4 skipped".to_owned(),
        };
        format!(
            "N = {} messages per measurement, {} enqueue tasks, latency at {} msg/s for {} s, {history}, best of {} \
             round(s) per delivery figure",
            self.messages, self.enqueue_tasks, self.latency_rate_per_sec, self.latency_secs, self.rounds
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
        progress("1/6 enqueue throughput");
        if let Err(e) = enqueue::run(env, &mut report, n, sizes.enqueue_tasks).await {
            report.error("enqueue", &e);
        }
    }
    if sizes.wants(Scenario::Delivery) {
        progress("2/6 end-to-end delivery throughput and baselines");
        delivery::scenario(env, &mut report, tuning, n, sizes.rounds).await;
        if sizes.synchronous_commit_off_variant {
            delivery::synchronous_commit_off(env, &mut report, tuning, n).await;
        }
    }
    if sizes.wants(Scenario::Latency) {
        progress("3/6 latency");
        let duration = Duration::from_secs(sizes.latency_secs);
        latency::scenario(env, &mut report, tuning, sizes.latency_rate_per_sec, duration).await;
    }
    if sizes.wants(Scenario::TableSize) {
        match sizes.finished_rows {
            Some(rows) => {
                progress("4/6 table-size independence");
                tablesize::scenario(env, &mut report, tuning, n, rows, sizes.rounds).await;
            }
            None => progress("4/6 table-size independence: skipped (--skip-million)"),
        }
    }
    if sizes.wants(Scenario::Isolation) {
        progress("5/6 slow-endpoint isolation");
        isolation::scenario(env, &mut report, tuning, n, sizes.rounds).await;
    }

    progress("6/6 peak memory");
    match machine::peak_rss_mib() {
        Some(mib) => {
            report
                .add(
                    "6. memory",
                    "memory.peak_rss",
                    "peak resident memory of this process (VmHWM)",
                    mib,
                    "MiB",
                )
                .note("includes the in-process receivers, which keep every request they saw");
        }
        None => report.error("memory", &"no VmHWM in /proc/self/status"),
    }
    env.drop_leftovers().await;
    Ok(report)
}

/// Progress goes to stderr so stdout holds only the table.
fn progress(step: &str) {
    eprintln!("[bench] {step}");
}
