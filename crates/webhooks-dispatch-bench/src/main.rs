//! `cargo run --release -p webhooks-dispatch-bench`: measures webhooks-dispatch on this machine against its
//! own durable PostgreSQL (or `DATABASE_URL`) and HTTPS receivers on loopback, prints a table and writes the
//! same figures as JSON. Nothing is sent beyond 127.0.0.0/8.
//!
//! This file only reads the command line; the benchmark itself is the `webhooks-dispatch-benchkit` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use webhooks_dispatch_benchkit::{Options, Scenario};

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
    webhooks_dispatch_benchkit::run(Options {
        messages: args.messages,
        quick: args.quick,
        json: args.json,
        skip_million: args.skip_million,
        skip_sync_off: args.skip_sync_off,
        only: args.only,
        rounds: args.rounds,
        pg_stats: args.pg_stats,
        keep_databases: args.keep_databases,
        concurrency: args.concurrency,
        per_endpoint: args.per_endpoint,
        claim_batch: args.claim_batch,
        poll_ms: args.poll_ms,
    })
}
