//! How far ahead a worker claims for each endpoint.
//!
//! Claims that return only an endpoint's free slots would have to run once per few deliveries for a busy
//! endpoint (Little's law: at 7,000/s with 16 in flight, ~450 claims a second). So for an endpoint that keeps
//! up — its recent attempts delivered, quickly — the worker claims ahead into that endpoint's ready queue:
//! about [`QUEUE_FOR`] of work at its observed rate, at most [`MAX_AHEAD_FACTOR`] × its cap. An endpoint that
//! is slow, failing or unknown gets no claim ahead, so its surplus stays in the table (unleased, where endpoint
//! backoff can reach it) and a claim costs it nothing. Queued messages wait at most about `QUEUE_FOR` plus
//! a few attempt latencies, far inside their lease.

use std::collections::HashMap;
use std::time::Duration;

/// How much work, at an endpoint's observed rate, is claimed ahead of its free slots.
pub(super) const QUEUE_FOR: Duration = Duration::from_millis(250);
/// Claim-ahead is capped at this many times the endpoint's in-flight cap: for the default cap of 16, about one
/// claim batch, so a hot endpoint is fed by claims as large as a spread-out load's. Safe with leases because an
/// endpoint that stops keeping up has its queue handed back at its first slow or failed attempt, so a queued
/// message waits at most about one attempt deadline.
pub(super) const MAX_AHEAD_FACTOR: usize = 12;
/// An attempt slower than this does not count as keeping up, however it ended.
const SLOW: Duration = Duration::from_secs(1);
/// Weight of the newest latency in the moving average.
const ALPHA: f64 = 0.2;
/// Endpoints remembered at most; the least recently active beyond it are forgotten (they then start over
/// without claim-ahead, which is only ever conservative).
const MAX_TRACKED: usize = 10_000;

/// Per-endpoint observations of one worker.
pub(super) struct Pace {
    cap: usize,
    endpoints: HashMap<String, Observed>,
    tick: u64,
}

struct Observed {
    /// Moving average of recent attempt latencies, while they keep delivering; `None` after a failure.
    latency: Option<f64>,
    last_seen: u64,
}

/// How one attempt went, as far as pacing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Went {
    /// The endpoint answered 2xx.
    Delivered,
    /// The endpoint answered with an error status (it is reachable but not accepting).
    Refused,
    /// The endpoint could not be reached: connection, TLS, DNS, timeout.
    Unreachable,
}

impl Pace {
    pub(super) fn new(cap: usize) -> Self {
        Pace {
            cap: cap.max(1),
            endpoints: HashMap::new(),
            tick: 0,
        }
    }

    /// Records one finished attempt.
    pub(super) fn observe(&mut self, endpoint_id: &str, went: Went, latency: Duration) {
        self.tick += 1;
        let tick = self.tick;
        if !self.endpoints.contains_key(endpoint_id) && self.endpoints.len() >= MAX_TRACKED {
            self.forget_oldest();
        }
        let seen = self.endpoints.entry(endpoint_id.to_owned()).or_insert(Observed {
            latency: None,
            last_seen: tick,
        });
        seen.last_seen = tick;
        let secs = latency.as_secs_f64();
        seen.latency = match (went, seen.latency) {
            (Went::Delivered, _) if latency >= SLOW => None,
            (Went::Delivered, Some(avg)) => Some(avg + ALPHA * (secs - avg)),
            (Went::Delivered, None) => Some(secs),
            (Went::Refused | Went::Unreachable, _) => None,
        };
    }

    /// Extra messages to claim for `endpoint_id` beyond its free slots.
    pub(super) fn ahead(&self, endpoint_id: &str) -> usize {
        let Some(latency) = self.endpoints.get(endpoint_id).and_then(|o| o.latency) else {
            return 0;
        };
        // Rate at the cap: cap attempts per average latency (floored at 0.1 ms against division blow-up).
        let rate = self.cap as f64 / latency.max(0.000_1);
        let ahead = (rate * QUEUE_FOR.as_secs_f64()).ceil();
        (ahead as usize).min(self.cap * MAX_AHEAD_FACTOR)
    }

    /// Every endpoint currently allowed to claim ahead, with its allowance.
    pub(super) fn allowances(&self) -> HashMap<String, usize> {
        self.endpoints
            .keys()
            .filter_map(|e| Some((e.clone(), self.ahead(e))).filter(|(_, n)| *n > 0))
            .collect()
    }

    fn forget_oldest(&mut self) {
        if let Some(oldest) = self
            .endpoints
            .iter()
            .min_by_key(|(_, o)| o.last_seen)
            .map(|(e, _)| e.clone())
        {
            self.endpoints.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_endpoint_claims_ahead_up_to_the_factor_and_a_slow_one_in_proportion() {
        let mut pace = Pace::new(16);
        for _ in 0..10 {
            pace.observe("fast", Went::Delivered, Duration::from_millis(1));
            pace.observe("medium", Went::Delivered, Duration::from_millis(200));
        }
        assert_eq!(pace.ahead("fast"), 16 * MAX_AHEAD_FACTOR);
        // 16 per 200 ms = 80/s; a quarter second of that is 20.
        assert_eq!(pace.ahead("medium"), 20);
        assert_eq!(pace.ahead("unknown"), 0);
        assert_eq!(pace.allowances().len(), 2);
    }

    #[test]
    fn failing_or_slow_endpoints_get_no_claim_ahead_until_they_deliver_again() {
        let mut pace = Pace::new(16);
        pace.observe("e", Went::Delivered, Duration::from_millis(2));
        assert!(pace.ahead("e") > 0);
        pace.observe("e", Went::Unreachable, Duration::from_secs(10));
        assert_eq!(pace.ahead("e"), 0);
        pace.observe("e", Went::Delivered, Duration::from_millis(2));
        assert!(pace.ahead("e") > 0);
        pace.observe("e", Went::Refused, Duration::from_millis(2));
        assert_eq!(pace.ahead("e"), 0);
        pace.observe("e", Went::Delivered, Duration::from_secs(2));
        assert_eq!(pace.ahead("e"), 0, "a slow success is not keeping up");
        assert!(pace.allowances().is_empty());
    }

    #[test]
    fn the_table_of_endpoints_is_bounded() {
        let mut pace = Pace::new(1);
        for i in 0..MAX_TRACKED + 10 {
            pace.observe(&format!("e{i}"), Went::Delivered, Duration::from_millis(1));
        }
        assert_eq!(pace.endpoints.len(), MAX_TRACKED);
        assert_eq!(pace.ahead("e0"), 0, "the least recently seen was forgotten");
        assert!(pace.ahead(&format!("e{}", MAX_TRACKED + 9)) > 0);
    }
}
