//! Duration settings: the text form (`500ms`, `10s`, `2m`, `1h`, `5d`) and each setting's allowed range.
//!
//! Every duration is bounded above because the worker and the API server add them to `Instant`s and feed
//! them to timers: an absurd value (`9999999999999999h`) would otherwise be accepted at start and panic the
//! process on its first use, long after the operator has looked away.

use std::time::Duration;

use crate::Error;

/// Longest accepted `poll_interval`, `attempt_timeout`, `shutdown_grace`, `header_read_timeout`,
/// `request_timeout` and `metrics_refresh`: one hour. None of them is useful beyond minutes; an hour leaves
/// room for unusual receivers without letting a typo stall the worker or a connection for days.
pub const MAX_SHORT: Duration = Duration::from_secs(3600);
/// Longest accepted `disable_failing_after`: 3650 days (about ten years), far beyond any useful window and
/// still far from overflowing the timestamps it is subtracted from.
pub const MAX_DISABLE_FAILING_AFTER: Duration = Duration::from_secs(3650 * 86_400);

/// Parses `500ms`, `10s`, `2m`, `1h`, `5d` (a whole number and a unit; no unit is an error, so `10` cannot be
/// misread as milliseconds or seconds). Numbers too large for a `Duration` are refused, never saturated.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    non_zero(parse_duration_or_zero(text)?)
}

/// [`parse_duration`] that also accepts zero (`0s`), for the one duration where none is meaningful: a key
/// rotation's grace period, which zero ends at once.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let shape = || format!("{text:?} is not a duration like 500ms, 10s, 2m or 1h");
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(shape());
    }
    let too_large = || format!("{text:?} is far longer than any allowed duration");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let seconds_per = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(shape()),
    };
    Ok(Duration::from_secs(
        n.checked_mul(seconds_per).ok_or_else(too_large)?,
    ))
}

fn non_zero(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// `raw` parsed and checked against `1ms..=max`, or `default` when unset; errors name `setting` and the range.
pub(crate) fn duration(
    setting: &str,
    raw: Option<String>,
    default: Duration,
    max: Duration,
) -> Result<Duration, Error> {
    let Some(text) = raw else {
        return Ok(default);
    };
    let out_of_range =
        |why: String| Error::Config(format!("{setting}: {why}; allowed: 1ms to {}", show(max)));
    let d = parse_duration(&text).map_err(out_of_range)?;
    if d > max {
        return Err(out_of_range(format!("{} is too long", show(d))));
    }
    Ok(d)
}

/// A duration in the largest unit that shows it exactly (`3650d`, `1h`, `1500ms`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= per && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}
