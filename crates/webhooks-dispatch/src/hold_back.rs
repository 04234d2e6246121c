//! Holding back an endpoint that keeps failing, for new messages too.
//!
//! Per-message backoff alone lets a failing endpoint keep costing: every new message is claimed at once and
//! holds a delivery slot until it times out, and a receiver answering 503 just before the deadline is
//! attempted at full rate. So completions count each endpoint's transient failures in a row (timeouts,
//! connection failures, 408, 429, 5xx: whatever is retried) in the database, and from a threshold on hold
//! the whole endpoint back: no claim in any process takes any of its messages, old or new, until
//! `blocked_until`. The hold doubles with every further failure up to a ceiling, and a 429's Retry-After is
//! honoured when it asks for longer. The first attempt after the hold is the probe: a delivery clears the
//! count and the hold, another failure holds the endpoint back for longer. Held-back endpoints cost a claim
//! one index probe and nothing else (see `CLAIM_DUE`).

use std::time::Duration;

/// When and for how long an endpoint that keeps failing is held back (see the module docs). The default:
/// after 3 transient failures in a row, for 1 s, doubling per further failure, at most 1 minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HoldBack {
    /// Transient failures in a row (since the endpoint's last delivery) that start a hold; at least 1.
    pub after: u32,
    /// The first hold, doubled for each failure after `after`; 1 ms to 1 hour.
    pub first: Duration,
    /// The longest hold; from `first` to 1 day.
    pub longest: Duration,
}

/// Largest `HoldBack::after`: beyond it the rule could never apply (the stored count stops at 1,000,000).
const MAX_AFTER: u32 = 1_000_000;
const MAX_FIRST: Duration = Duration::from_secs(60 * 60);
const MAX_LONGEST: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for HoldBack {
    fn default() -> Self {
        HoldBack {
            after: 3,
            first: Duration::from_secs(1),
            longest: Duration::from_secs(60),
        }
    }
}

impl HoldBack {
    /// A hold after `after` failures in a row, for `first`, doubling, at most `longest` (each brought into
    /// its documented range).
    pub fn new(after: u32, first: Duration, longest: Duration) -> Self {
        HoldBack {
            after,
            first,
            longest,
        }
        .clamped()
    }

    /// Every field within its documented range, so the statement's arithmetic stays in range too.
    pub(crate) fn clamped(self) -> Self {
        let first = self.first.clamp(Duration::from_millis(1), MAX_FIRST);
        HoldBack {
            after: self.after.clamp(1, MAX_AFTER),
            first,
            longest: self.longest.clamp(first, MAX_LONGEST),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_hold_back_is_brought_into_range(after: u32, first_ms: u64, longest_ms: u64) {
            let h = HoldBack::new(after, Duration::from_millis(first_ms), Duration::from_millis(longest_ms));
            prop_assert!((1..=MAX_AFTER).contains(&h.after));
            prop_assert!(h.first >= Duration::from_millis(1) && h.first <= MAX_FIRST);
            prop_assert!(h.longest >= h.first && h.longest <= MAX_LONGEST);
            // The statement shifts the first hold (in ms) left by up to 40: it must not overflow an int8.
            prop_assert!(h.first.as_millis() << 40 < i64::MAX as u128);
        }
    }
}
