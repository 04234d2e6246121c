//! Which attempt results are retried, and when the next attempt is due.
//!
//! Transient failures (network, TLS, timeout, 408, 429, 5xx) are retried with capped exponential backoff;
//! a `Retry-After` on 429 or 503 replaces the backoff, capped at [`MAX_RETRY_AFTER`]. Everything else — other
//! 4xx, every 3xx (redirects are never followed), refused destinations, malformed URLs — is permanent: retrying
//! cannot change the answer, and retrying an SSRF refusal only hammers the resolver.

use std::time::{Duration, SystemTime};

/// Upper bound on a server-requested `Retry-After`, so a hostile endpoint cannot park a message for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest delay a [`RetryPolicy`] puts between two attempts: `base_delay` and `max_delay` are read as at most
/// this. Far beyond any useful backoff, and short enough that a retry time computed from it is always a
/// representable timestamp, whatever the durations a policy was given.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How many attempts a message gets and how long to wait between them.
///
/// The delay before attempt `n + 1` (after `n` failed attempts) is `base × 2^(n−1)`, capped at `max_delay`
/// and at [`MAX_RETRY_DELAY`]. Any field values are accepted: none can make a backoff or a retry time panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first; after this many transient failures the message is dead.
    pub max_attempts: u32,
    /// Delay after the first failed attempt.
    pub base_delay: Duration,
    /// Upper bound on any backoff delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 60 s doubling, capped at 1 h: 1 m, 2 m, 4 m, 8 m, 16 m between attempts.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60 * 60),
        }
    }
}

impl RetryPolicy {
    /// Backoff after `failed_attempts` (≥ 1) failures: at most `max_delay` and [`MAX_RETRY_DELAY`].
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(63);
        let factor = 1u64 << exponent;
        let millis = u64::try_from(self.base_delay.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(millis.saturating_mul(factor))
            .min(self.max_delay)
            .min(MAX_RETRY_DELAY)
    }

    /// This policy with its delays clamped to [`MAX_RETRY_DELAY`], as the dispatcher builder keeps it.
    pub(crate) fn clamped(self) -> Self {
        RetryPolicy {
            base_delay: self.base_delay.min(MAX_RETRY_DELAY),
            max_delay: self.max_delay.min(MAX_RETRY_DELAY),
            ..self
        }
    }

    /// What happens after attempt number `attempt_no` (1-based) ended with `result`.
    pub fn decide(&self, attempt_no: u32, result: &AttemptResult) -> Decision {
        match result.class() {
            Class::Success => Decision::Delivered,
            Class::Permanent => Decision::Dead,
            Class::Transient { retry_after } => {
                if attempt_no >= self.max_attempts.max(1) {
                    Decision::Dead
                } else {
                    let delay = match retry_after {
                        Some(server_asked) => server_asked.min(MAX_RETRY_AFTER),
                        None => self.backoff(attempt_no),
                    };
                    Decision::RetryAfter(delay)
                }
            }
        }
    }
}

/// The state a message moves to after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// 2xx: done, never attempted again.
    Delivered,
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Permanent failure or attempts exhausted: moved to dead-letter, never attempted again.
    Dead,
}

/// How one delivery attempt ended, before any policy is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The endpoint answered with a status code (and possibly a parsed `Retry-After`).
    Response {
        /// HTTP status code.
        status: u16,
        /// Parsed `Retry-After`, only meaningful on 429 and 503.
        retry_after: Option<Duration>,
    },
    /// No usable response: connection refused or reset, TLS failure, DNS failure, protocol error.
    Network(&'static str),
    /// The attempt's absolute deadline passed.
    Timeout,
    /// The destination was refused (SSRF policy) or the stored URL is unusable. Never retried.
    Refused(String),
}

enum Class {
    Success,
    Transient { retry_after: Option<Duration> },
    Permanent,
}

impl AttemptResult {
    fn class(&self) -> Class {
        match self {
            AttemptResult::Response { status, retry_after } => match status {
                200..=299 => Class::Success,
                408 | 500..=599 => Class::Transient {
                    retry_after: if *status == 503 { *retry_after } else { None },
                },
                429 => Class::Transient {
                    retry_after: *retry_after,
                },
                _ => Class::Permanent,
            },
            AttemptResult::Network(_) | AttemptResult::Timeout => Class::Transient { retry_after: None },
            AttemptResult::Refused(_) => Class::Permanent,
        }
    }

    /// The HTTP status, when there was a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptResult::Response { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A generic description for the attempt log: never the response body, a driver message or a secret.
    pub fn error_text(&self) -> Option<String> {
        match self {
            AttemptResult::Response {
                status: 200..=299, ..
            } => None,
            AttemptResult::Response { status, .. } => Some(format!("endpoint answered HTTP {status}")),
            AttemptResult::Network(what) => Some((*what).to_owned()),
            AttemptResult::Timeout => Some("attempt timed out".to_owned()),
            AttemptResult::Refused(why) => Some(format!("destination refused: {why}")),
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (relative to `now`). Dates in the past mean
/// "now"; unparseable values are ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(status: u16) -> AttemptResult {
        AttemptResult::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn invariant4_default_schedule_is_60s_doubling_capped_at_one_hour() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (1..=8).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(
            p.decide(1, &status(500)),
            Decision::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            p.decide(5, &status(500)),
            Decision::RetryAfter(Duration::from_secs(960))
        );
        assert_eq!(
            p.decide(6, &status(500)),
            Decision::Dead,
            "exhausted after 6 attempts"
        );
    }

    #[test]
    fn invariant4_retried_and_permanent_classes() {
        let p = RetryPolicy::default();
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(matches!(p.decide(1, &status(s)), Decision::RetryAfter(_)), "{s}");
        }
        for s in [301, 302, 307, 308, 400, 401, 403, 404, 410, 422, 100, 600] {
            assert_eq!(p.decide(1, &status(s)), Decision::Dead, "{s}");
        }
        for s in [200, 201, 204, 299] {
            assert_eq!(p.decide(1, &status(s)), Decision::Delivered, "{s}");
        }
        assert!(matches!(
            p.decide(1, &AttemptResult::Timeout),
            Decision::RetryAfter(_)
        ));
        assert!(matches!(
            p.decide(1, &AttemptResult::Network("tls")),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            p.decide(1, &AttemptResult::Refused("loopback".into())),
            Decision::Dead
        );
    }

    #[test]
    fn invariant4_retry_after_honoured_on_429_and_503_only_and_capped() {
        let p = RetryPolicy::default();
        let with = |s, secs| AttemptResult::Response {
            status: s,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            p.decide(1, &with(429, 7)),
            Decision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(1, &with(503, 900)),
            Decision::RetryAfter(Duration::from_secs(900))
        );
        assert_eq!(
            p.decide(1, &with(500, 7)),
            Decision::RetryAfter(Duration::from_secs(60))
        );
        assert_eq!(
            p.decide(1, &with(429, 10_000_000)),
            Decision::RetryAfter(MAX_RETRY_AFTER)
        );
        assert_eq!(p.decide(6, &with(429, 7)), Decision::Dead);
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(1_445_412_600 - 1_445_412_480))
        );
        assert_eq!(
            parse_retry_after("Sat, 21 Oct 2000 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn invariant7_error_text_is_generic() {
        assert_eq!(status(200).error_text(), None);
        assert_eq!(status(503).error_text().unwrap(), "endpoint answered HTTP 503");
    }

    /// Durations from nothing to `Duration::MAX`, the extremes always among them (also the builder's tests).
    pub(crate) fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            any::<u64>().prop_map(Duration::from_secs),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u64..10_000_000_000).prop_map(Duration::from_millis),
        ]
    }

    fn any_attempt() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0), Just(1), Just(u32::MAX), any::<u32>(), 0u32..100]
    }

    /// Any instant chrono can represent, the last one included.
    fn any_time() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
        let (first, last) = (
            chrono::DateTime::<chrono::Utc>::MIN_UTC.timestamp(),
            chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp(),
        );
        prop_oneof![
            Just(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            (first..=last).prop_map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap()),
            (0i64..4_102_444_800).prop_map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap()),
        ]
    }

    proptest! {
        /// Any policy (delays from zero to `Duration::MAX`, any attempt counts), any attempt number and any
        /// result: backoff and decision never panic, every delay stays within the policy's cap (or the
        /// Retry-After cap), and the next attempt time computed from it exists and is no further away than
        /// the delay. `Duration::MAX` used to reach `DateTime + chrono::Duration::MAX` and panic the worker on
        /// every message.
        #[test]
        fn any_policy_gives_capped_delays_and_a_representable_next_attempt_time(
            max_attempts in any_attempt(),
            base_delay in any_duration(),
            max_delay in any_duration(),
            attempt_no in any_attempt(),
            status in any::<u16>(),
            retry_after in proptest::option::of(any_duration()),
            network in any::<bool>(),
            at in any_time(),
        ) {
            let p = RetryPolicy { max_attempts, base_delay, max_delay };
            let cap = max_delay.min(MAX_RETRY_DELAY);
            prop_assert!(p.backoff(attempt_no) <= cap);
            prop_assert!(p.clone().clamped().backoff(attempt_no) == p.backoff(attempt_no));
            let result = if network {
                AttemptResult::Network("reset")
            } else {
                AttemptResult::Response { status, retry_after }
            };
            if let Decision::RetryAfter(delay) = p.decide(attempt_no, &result) {
                prop_assert!(delay <= cap.max(MAX_RETRY_AFTER), "{:?}", delay);
                let next = crate::config::later(at, delay);
                prop_assert!(next >= at);
                prop_assert!((next - at).to_std().unwrap() <= delay);
            }
        }

        #[test]
        fn invariant4_backoff_is_monotonic_and_capped(
            base_ms in 1u64..10_000_000, cap_ms in 1u64..100_000_000, n in 1u32..200,
        ) {
            let p = RetryPolicy {
                max_attempts: 1000,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(cap_ms),
            };
            let d = p.backoff(n);
            prop_assert!(d <= p.max_delay);
            prop_assert!(p.backoff(n + 1) >= d);
            if n == 1 { prop_assert_eq!(d, p.base_delay.min(p.max_delay)); }
        }

        #[test]
        fn invariant4_never_retries_past_max_attempts(max in 1u32..20, s in 100u16..700) {
            let p = RetryPolicy { max_attempts: max, ..RetryPolicy::default() };
            let d = p.decide(max, &status(s));
            prop_assert!(!matches!(d, Decision::RetryAfter(_)));
        }
    }
}
