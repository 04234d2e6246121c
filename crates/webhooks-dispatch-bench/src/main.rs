//! `cargo run --release -p webhooks-dispatch-bench`: measures webhooks-dispatch on this machine against its
//! own durable PostgreSQL (or `DATABASE_URL`) and HTTPS receivers on loopback, prints a table and writes the
//! same figures as JSON. Nothing is sent beyond 127.0.0.0/8.
//!
//! This file only reads the command line; the scenarios live in their modules (see `suite`).

mod baseline;
mod cpu;
mod delivery;
mod enqueue;
mod env;
mod isolation;
mod latency;
mod machine;
mod pgstats;
mod report;
mod suite;
mod tablesize;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use webhooks_dispatch::DEFAULT_ATTEMPT_TIMEOUT;

use crate::env::{Env, Tuning};
use crate::suite::{Scenario, Sizes};

/// Benchmark of webhooks-dispatch: enqueue and delivery throughput, latency, table-size independence,
/// slow-endpoint isolation, peak memory.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Messages per throughput measurement [default: 20000, or 1000 with --quick]
    #[arg(long)]
    messages: Option<usize>,
    /// Small sizes for a smoke run (also shrinks the history for the table-size scenario)
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON results
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// Skip the table-size scenario (1,000,000 finished rows)
    #[arg(long)]
    skip_million: bool,
    /// Skip the optional non-durable (synchronous_commit=off) delivery run
    #[arg(long)]
    skip_sync_off: bool,
    /// Run only these scenarios (comma-separated); peak memory is always reported
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Repetitions of each delivery measurement (interleaved; the best counts) [default: 2, or 1 with --quick]
    #[arg(long)]
    rounds: Option<usize>,
    /// Diagnostics: preload pg_stat_statements and show claim/complete server time under delivery figures
    #[arg(long)]
    pg_stats: bool,
    /// Leave the benchmark databases in place for inspection (meant for a DATABASE_URL server)
    #[arg(long)]
    keep_databases: bool,
    /// Deliveries in flight per worker
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Most deliveries in flight per endpoint per worker
    #[arg(long, default_value_t = 4)]
    per_endpoint: usize,
    /// Most rows per claim
    #[arg(long, default_value_t = 200)]
    claim_batch: u32,
    /// Longest sleep between looks at the table, in milliseconds
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let quick = args.quick;
    let sizes = Sizes {
        messages: args.messages.unwrap_or(if quick { 1_000 } else { 20_000 }).max(1),
        enqueue_tasks: 16,
        latency_rate_per_sec: 100,
        latency_secs: if quick { 3 } else { 10 },
        finished_rows: (!args.skip_million).then_some(if quick { 20_000 } else { 1_000_000 }),
        synchronous_commit_off_variant: !args.skip_sync_off,
        only: args.only,
        rounds: args.rounds.unwrap_or(if quick { 1 } else { 2 }).max(1),
    };
    let tuning = Tuning {
        concurrency: args.concurrency.max(1),
        per_endpoint: args.per_endpoint.max(1),
        claim_batch: args.claim_batch.clamp(1, 1000),
        poll_interval_ms: args.poll_ms.max(1),
        // The library's default everywhere except scenario 5, which the brief fixes at 2 s.
        attempt_timeout_ms: u64::try_from(DEFAULT_ATTEMPT_TIMEOUT.as_millis()).unwrap_or(10_000),
        shutdown_grace_ms: 3_000,
        worker_pool_size: 8,
    };

    // The cluster starts before the runtime (its start blocks) and is dropped after it, so every pool and
    // receiver task has ended before the server goes away.
    let env = match Env::start(args.pg_stats) {
        Ok(mut env) => {
            env.keep_databases = args.keep_databases;
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
    if let Err(e) = report.write_json(&args.json) {
        eprintln!("cannot write {}: {e}", args.json.display());
        return ExitCode::FAILURE;
    }
    eprintln!("[bench] results written to {}", args.json.display());
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
