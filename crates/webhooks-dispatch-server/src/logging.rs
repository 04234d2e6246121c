//! The tracing subscriber: human or JSON lines on stderr (stdout is for command output), filtered by
//! `RUST_LOG` or a per-command default.
//!
//! The library logs one INFO event per recorded attempt ("webhook attempt": message id, endpoint id,
//! attempt number, status, latency, outcome, generic error — never the secret or the payload); the default
//! filter for the service commands is `info`, so those lines are shown.

use std::io::IsTerminal;

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

/// Default filter for `serve` and `worker`: every attempt line, request summaries, warnings from all.
pub const SERVICE_FILTER: &str = "info";
/// Default filter for the client commands, whose output is their result: warnings and errors only.
pub const CLIENT_FILTER: &str = "warn";

/// Installs the global subscriber. Returns false if one was already installed (tests install it once per
/// process), in which case the existing one stays.
pub fn init(format: LogFormat, default_filter: &str) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let output = match format {
        // Colours only for a person at a terminal, never into a log file or journal.
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .try_init()
        .is_ok()
}
