//! Spacing of a worker's round trips while traffic is dense.
//!
//! Under a steady stream of single-message dispatches, every insert wakes the worker, and a claim (or an
//! outcome write) run at each wake-up takes the few rows that arrived since the last one. Each statement has
//! a fixed server cost far above its per-row cost (the claim's endpoint skip scan, the statement and commit
//! overhead), so at thousands of messages a second most of the database's time went into that fixed part:
//! measured through the service's API, ~450 claims a second of ~14 rows each. After a round trip that moved
//! at least [`DENSE_ROWS`] rows, the next one waits until `interval` after this one started, so the same
//! traffic is taken in fewer, larger statements. A round trip that moved fewer rows sets no wait: at a low
//! rate each message is still claimed the moment it is announced, so latency stays that of one claim.
//! (River's fetch cooldown is the same idea, applied to every fetch.)

use std::time::{Duration, Instant};

/// A round trip that moved at least this many rows marks traffic as dense.
pub(super) const DENSE_ROWS: usize = 8;

/// One kind of round trip's spacing.
#[derive(Debug)]
pub(super) struct Cooldown {
    interval: Duration,
    not_before: Option<Instant>,
}

impl Cooldown {
    pub(super) fn new(interval: Duration) -> Self {
        Cooldown {
            interval,
            not_before: None,
        }
    }

    /// Notes a round trip that started at `started` and moved `rows` rows.
    pub(super) fn moved(&mut self, started: Instant, rows: usize) {
        self.not_before = (rows >= DENSE_ROWS && !self.interval.is_zero())
            .then(|| started.checked_add(self.interval))
            .flatten();
    }

    /// When the next round trip may start, if that is later than `now`.
    pub(super) fn wait_until(&self, now: Instant) -> Option<Instant> {
        self.not_before.filter(|&t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_round_trip_spaces_the_next_by_the_interval_from_its_start() {
        let mut c = Cooldown::new(Duration::from_millis(8));
        let t0 = Instant::now();
        c.moved(t0, DENSE_ROWS);
        assert_eq!(c.wait_until(t0), Some(t0 + Duration::from_millis(8)));
        assert_eq!(
            c.wait_until(t0 + Duration::from_millis(5)),
            Some(t0 + Duration::from_millis(8))
        );
        assert_eq!(c.wait_until(t0 + Duration::from_millis(8)), None);
    }

    #[test]
    fn a_sparse_round_trip_never_delays_the_next() {
        let mut c = Cooldown::new(Duration::from_millis(8));
        let t0 = Instant::now();
        c.moved(t0, DENSE_ROWS);
        // A sparse one afterwards clears the wait the dense one set.
        c.moved(t0, DENSE_ROWS - 1);
        assert_eq!(c.wait_until(t0), None);
        c.moved(t0, 0);
        assert_eq!(c.wait_until(t0), None);
    }

    #[test]
    fn a_zero_interval_turns_spacing_off() {
        let mut c = Cooldown::new(Duration::ZERO);
        let t0 = Instant::now();
        c.moved(t0, 1000);
        assert_eq!(c.wait_until(t0), None);
    }
}
