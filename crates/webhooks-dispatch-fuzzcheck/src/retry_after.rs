//! Target `retry_after`: `retry::parse_retry_after(value, now)` and what the retry policy makes of it.
//!
//! Input: a first line `<now> [<ahead>]` (Unix seconds as an `i64`, and a `u32`; if the line does not
//! start with a number, `now` defaults and the whole input is the value), then the header value (not UTF-8:
//! decoded lossily, since the function takes any `&str`).
//!
//! Properties: it never panics; delta-seconds (digits, surrounding whitespace) are exactly that many
//! seconds; any other accepted value is an HTTP-date, worth its distance from `now` (zero once past);
//! whatever is parsed, a 429 or 503 carrying it is retried after at most `MAX_RETRY_AFTER`; and the date
//! `ahead` seconds after `now`, as `httpdate` formats it, parses back to exactly `ahead` seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use webhooks_dispatch::retry::{parse_retry_after, AttemptResult, Decision, RetryPolicy, MAX_RETRY_AFTER};

use crate::input::{split_lines, words};

const DEFAULT_NOW: i64 = 1_700_000_000;
/// 10000-01-01T00:00:00Z in Unix seconds.
const YEAR_10000: u64 = 253_402_300_800;

/// Parses one input's value and checks the properties above; panics on a violated one.
pub fn check(data: &[u8]) {
    let ([first], rest) = split_lines::<1>(data);
    let [now, ahead] = words::<i64, 2>(first);
    let (now, value) = match now {
        Some(now) => (now, rest),
        None => (DEFAULT_NOW, data),
    };
    let Some(now) = system_time(now) else {
        return;
    };
    let value = String::from_utf8_lossy(value);
    let parsed = parse_retry_after(&value, now);

    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let secs = trimmed.parse::<u64>().ok();
        // More digits than a u64 holds is not a number of seconds anyone can wait; ignoring it is fine.
        assert_eq!(parsed, secs.map(Duration::from_secs), "delta-seconds {value:?}");
    } else if let Some(delay) = parsed {
        if trimmed.parse::<u64>().is_err() {
            let at = httpdate::parse_http_date(trimmed).unwrap_or_else(|_| {
                panic!("{value:?} accepted as {delay:?}: neither seconds nor an HTTP-date")
            });
            assert_eq!(
                delay,
                at.duration_since(now).unwrap_or(Duration::ZERO),
                "{value:?} at {now:?}"
            );
        }
    }
    if let Some(delay) = parsed {
        check_policy(delay);
    }
    if let Some(ahead) = ahead.and_then(|a| u32::try_from(a).ok()) {
        check_round_trip(now, ahead);
    }
}

/// A server's Retry-After replaces the backoff on 429 and 503, capped.
fn check_policy(delay: Duration) {
    let policy = RetryPolicy::default();
    for status in [429, 503] {
        let result = AttemptResult::Response {
            status,
            retry_after: Some(delay),
        };
        let decided = policy.decide(1, &result);
        assert_eq!(
            decided,
            Decision::RetryAfter(delay.min(MAX_RETRY_AFTER)),
            "{status} with {delay:?}"
        );
        if let Decision::RetryAfter(d) = decided {
            assert!(d <= MAX_RETRY_AFTER, "{status} waits {d:?}");
        }
    }
}

/// `httpdate` formats the whole second `ahead` seconds after `now`; that date must be worth `ahead`
/// seconds from the whole second `now` (HTTP-dates have no fractions).
fn check_round_trip(now: SystemTime, ahead: u32) {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return;
    };
    let secs = since_epoch.as_secs();
    // HTTP-dates stop at the end of year 9999 (`httpdate` panics formatting a later time).
    if secs.saturating_add(u64::from(ahead)) >= YEAR_10000 {
        return;
    }
    let now = UNIX_EPOCH + Duration::from_secs(secs);
    let header = httpdate::fmt_http_date(now + Duration::from_secs(u64::from(ahead)));
    assert_eq!(
        parse_retry_after(&header, now),
        Some(Duration::from_secs(u64::from(ahead))),
        "{header:?} from {now:?}"
    );
}

/// `secs` after (or before) the Unix epoch, if the platform's clock can represent it.
fn system_time(secs: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}
