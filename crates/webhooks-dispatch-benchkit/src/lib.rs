//! The benchmark of webhooks-dispatch, as a library: `cargo run --release -p webhooks-dispatch-bench` parses
//! its command line into [`Options`] and calls [`run`], which measures the library on this machine against
//! its own durable PostgreSQL (or `DATABASE_URL`, which must be on loopback) and HTTPS receivers on loopback,
//! prints a table and writes the same figures as JSON. Nothing is sent beyond 127.0.0.0/8.
//!
//! It is a library (a default workspace member) rather than code inside the binary so that a plain
//! `cargo test` at the workspace root runs its unit tests; the binary stays out of the default members,
//! because the root `cargo run` must keep starting the service. The scenarios live in their modules, in the
//! order `suite` runs them.

#![warn(missing_docs)]

mod api;
mod baseline;
mod claimcost;
mod cpu;
mod delivery;
mod disabled;
mod enqueue;
mod env;
mod fanout;
mod hot;
mod isolation;
mod latency;
mod machine;
mod pgstats;
mod report;
mod service;
mod signing;
mod sizing;
mod sqlite;
mod suite;
mod tablesize;
mod tarpit;

use std::path::PathBuf;
use std::process::ExitCode;

use webhooks_dispatch::DEFAULT_ATTEMPT_TIMEOUT;

use crate::env::{Env, Tuning};
use crate::suite::Sizes;

pub use crate::suite::Scenario;

/// What the command line asks for. `None` and `quick` select the sizes: the full run's, or a smoke run's.
#[derive(Clone, Debug)]
pub struct Options {
    /// Messages per throughput measurement; default 20,000, or 1,000 with `quick`.
    pub messages: Option<usize>,
    /// Small sizes for a smoke run (also shrinks the history for the table-size scenario and the backlog for
    /// the disabled-backlog scenario).
    pub quick: bool,
    /// Where to write the JSON results.
    pub json: PathBuf,
    /// Skip the table-size scenario (1,000,000 finished rows).
    pub skip_million: bool,
    /// Skip the optional non-durable (`synchronous_commit=off`) delivery run.
    pub skip_sync_off: bool,
    /// Run only these scenarios; empty runs all. Peak memory is always reported.
    pub only: Vec<Scenario>,
    /// Repetitions of each delivery measurement (interleaved; the best counts); default 2, or 1 with `quick`.
    pub rounds: Option<usize>,
    /// Preload `pg_stat_statements` and show claim/complete server time under the delivery figures.
    pub pg_stats: bool,
    /// Leave the benchmark databases in place for inspection (meant for a `DATABASE_URL` server).
    pub keep_databases: bool,
    /// Deliveries in flight per worker.
    pub concurrency: usize,
    /// Most deliveries in flight per endpoint per worker.
    pub per_endpoint: usize,
    /// Most rows per claim.
    pub claim_batch: u32,
    /// Longest sleep between looks at the table, in milliseconds.
    pub poll_ms: u64,
}

impl Options {
    fn sizes(&self) -> Sizes {
        let quick = self.quick;
        Sizes {
            messages: self.messages.unwrap_or(if quick { 1_000 } else { 20_000 }).max(1),
            enqueue_tasks: 16,
            latency_rate_per_sec: 100,
            latency_secs: if quick { 3 } else { 10 },
            finished_rows: (!self.skip_million).then_some(if quick { 20_000 } else { 1_000_000 }),
            synchronous_commit_off_variant: !self.skip_sync_off,
            only: self.only.clone(),
            rounds: self.rounds.unwrap_or(if quick { 1 } else { 2 }).max(1),
            claim_backlog_divisor: if quick { 10 } else { 1 },
            disabled_backlog: if quick { 10_000 } else { 100_000 },
        }
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            concurrency: self.concurrency.max(1),
            per_endpoint: self.per_endpoint.max(1),
            claim_batch: self.claim_batch.clamp(1, 1000),
            poll_interval_ms: self.poll_ms.max(1),
            // The library's default everywhere except scenario 5, which the brief fixes at 2 s.
            attempt_timeout_ms: u64::try_from(DEFAULT_ATTEMPT_TIMEOUT.as_millis()).unwrap_or(10_000),
            shutdown_grace_ms: 3_000,
            worker_pool_size: 8,
        }
    }
}

/// Runs the benchmark: starts the server, runs the scenarios, prints the table on stdout (progress and
/// errors go to stderr) and writes the JSON. Fails when the server or runtime cannot start, when the JSON
/// cannot be written, or when any scenario failed (the others still run and are reported).
pub fn run(options: Options) -> ExitCode {
    let sizes = options.sizes();
    let tuning = options.tuning();

    // The cluster starts before the runtime (its start blocks) and is dropped after it, so every pool and
    // receiver task has ended before the server goes away.
    let env = match Env::start(options.pg_stats) {
        Ok(mut env) => {
            env.keep_databases = options.keep_databases;
            env
        }
        Err(e) => {
            eprintln!("cannot start PostgreSQL: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(suite::run(&env, &tuning, &sizes));
    drop(runtime);
    drop(env);

    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Err(e) = report.write_json(&options.json) {
        eprintln!("cannot write {}: {e}", options.json.display());
        return ExitCode::FAILURE;
    }
    eprintln!("[bench] results written to {}", options.json.display());
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn options(quick: bool) -> Options {
        Options {
            messages: None,
            quick,
            json: "results.json".into(),
            skip_million: false,
            skip_sync_off: false,
            only: Vec::new(),
            rounds: None,
            pg_stats: false,
            keep_databases: false,
            concurrency: 0,
            per_endpoint: 0,
            claim_batch: 5_000,
            poll_ms: 0,
        }
    }

    #[test]
    fn quick_shrinks_the_defaults_and_explicit_sizes_win() {
        let full = options(false).sizes();
        assert_eq!((full.messages, full.rounds, full.latency_secs), (20_000, 2, 10));
        assert_eq!(full.finished_rows, Some(1_000_000));
        let quick = options(true).sizes();
        assert_eq!((quick.messages, quick.rounds, quick.latency_secs), (1_000, 1, 3));
        assert_eq!(quick.finished_rows, Some(20_000));
        assert_eq!((full.claim_backlog_divisor, quick.claim_backlog_divisor), (1, 10));
        assert_eq!((full.disabled_backlog, quick.disabled_backlog), (100_000, 10_000));
        let explicit = Options {
            messages: Some(0),
            rounds: Some(5),
            skip_million: true,
            ..options(true)
        }
        .sizes();
        assert_eq!(
            (explicit.messages, explicit.rounds, explicit.finished_rows),
            (1, 5, None)
        );
    }

    #[test]
    fn worker_settings_are_clamped_to_usable_values() {
        let t = options(false).tuning();
        assert_eq!(
            (t.concurrency, t.per_endpoint, t.claim_batch, t.poll_interval_ms),
            (1, 1, 1000, 1)
        );
    }
}
