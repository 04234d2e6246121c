//! # webhooks-dispatch-fuzzcheck
//!
//! The properties behind the fuzz targets in `fuzz/`, one public function per target, each taking the raw
//! fuzz input and panicking when a property fails. The fuzz targets (nightly, libFuzzer) call these
//! functions and nothing else, and `tests/seeds.rs` runs every file of `fuzz/corpus/<target>/` through the
//! same function on stable, so the seed corpora are ordinary tests and a finding saved into a corpus stays
//! a regression test.
//!
//! Inputs are mostly line-oriented text, so seeds can be written and reviewed by hand; each module documents
//! its format. Whatever does not parse falls back to a default instead of being discarded, so the fuzzer
//! never wastes executions on inputs that check nothing.
//!
//! - [`verify()`]: Standard Webhooks verification and its header parsing (`signing::verify_at`).
//! - [`url_vetting()`]: `ssrf::Destination::parse` and `ssrf::vet` with a resolver answering from the input.
//! - [`retry_after()`]: `retry::parse_retry_after` and the cap the retry policy puts on it.
//! - [`config()`]: the service's TOML settings through `RawSettings::from_toml_str` and `Config::resolve`.

//!
//! ## Known findings
//! A property broken by a finding that is reported and awaiting its fix elsewhere is checked through
//! [`Known`]: the seed tests enforce it (the finding's seed fails until the fix is merged), while the fuzz
//! targets call [`tolerate_known_findings`] first, so one known finding does not stop a run from exploring
//! further. When a fix is merged, its variant is deleted.

#![deny(missing_docs)]

mod config;
mod input;
mod retry_after;
mod url_vetting;
mod verify;

use std::sync::atomic::{AtomicBool, Ordering};

pub use config::check as config;
pub use retry_after::check as retry_after;
pub use url_vetting::check as url_vetting;
pub use verify::check as verify;

/// Findings already reported, whose fixes are made outside the fuzzing work (README, "Fuzzing").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Known {
    /// `signing::verify_at` computes `(now - timestamp).abs()` in `i64`, which overflows (a panic in debug
    /// builds) for timestamps near `i64::MIN`/`i64::MAX`.
    VerifyTimestampOverflow,
    /// `ssrf::Destination::parse` accepts host names that are not DNS names (`a!b.example`, `-a.example`,
    /// `` a`b ``): registered, then refused at every attempt (no TLS server name, or no request).
    HostNotDnsName,
    /// The config loader accepts durations so long that `Instant::now() + d` panics in the worker and the
    /// delivery (`attempt_timeout`, `poll_interval` = "18446744073709551615s").
    ConfigDurationOverflowsInstant,
    /// The database URL's redaction keeps a `password` query parameter (which sqlx reads as the password).
    ConfigQueryPasswordShown,
    /// Quoted-value elision in config file errors toggles on the escaped quote of `"…\"…"`, so the rest of
    /// a mistyped API key shows.
    ConfigEscapedQuoteShown,
}

static TOLERATE_KNOWN: AtomicBool = AtomicBool::new(false);

/// Makes every [`Known`] finding's check pass in this process: the fuzz targets call it once at start.
pub fn tolerate_known_findings() {
    TOLERATE_KNOWN.store(true, Ordering::Relaxed);
}

fn tolerating_known_findings() -> bool {
    TOLERATE_KNOWN.load(Ordering::Relaxed)
}

/// Asserts a property that `finding` breaks, unless known findings are tolerated.
#[track_caller]
fn known(finding: Known, holds: bool, message: impl FnOnce() -> String) {
    if !holds && !tolerating_known_findings() {
        panic!("{} (known finding {finding:?})", message());
    }
}

/// A target's check: the raw fuzz input in, a panic out when a property fails.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the name of their directory under `fuzz/corpus/` and their binary under
/// `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("verify", verify),
    ("url_vetting", url_vetting),
    ("retry_after", retry_after),
    ("config", config),
];
