//! Short leases, kept alive while the worker holds its messages.
//!
//! A worker's lease is short (default 10 s), so the messages of a worker that died (killed, crashed, its
//! machine gone) are due again within about one lease. A healthy worker keeps what it holds by renewing:
//! every few seconds one statement (`RENEW_LEASES`) extends the lease of every message it has claimed and
//! not let go of — queued for its endpoint, in flight, or finished with its outcome not yet written — however
//! long that takes. So a slow attempt, a long queue or a lagging recorder never lets the lease lapse, and a
//! dead worker's leases lapse one lease after its last renewal.
//!
//! Renewal runs on its own task, off the claim/attempt loop (which never waits for it), and does bounded
//! work: one statement per tick over what the worker holds, which the worker's claims keep within its
//! capacity.
//! A renewal that fails (the database unreachable) is logged and tried again at the next tick. If renewals
//! keep failing past expiry, another worker may take the messages over: the message is then attempted twice
//! (at-least-once holds; the receiver deduplicates by `webhook-id`), and this worker's late result is refused
//! when it records it, because its lease token no longer matches. A renewal that finds a token gone tells the
//! loop, which drops such a message if it is still queued instead of attempting it too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::dispatcher::Dispatcher;
use crate::drain::Claimed;
use crate::store::{Executor, Value};

/// Default time a worker's claim stays leased to it without a renewal: a killed worker's messages are
/// attempted again within this plus one poll interval (11 s with the defaults; the service promises 15 s).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Shortest accepted lease: below it, a renewal's round trip and a busy scheduler would eat the margin.
pub(super) const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest accepted lease (keeps `now + lease` far from any timestamp limit).
pub(super) const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// A lease's length and how often it is renewed, validated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LeaseTiming {
    pub lease: Duration,
    pub renew_every: Duration,
}

impl LeaseTiming {
    /// `lease` clamped to [`MIN_LEASE`]..=[`MAX_LEASE`]; renewals `renew_every` apart (default a third of the
    /// lease), clamped to a tenth ..= half of it: at least one more renewal always fits in a lease, and none
    /// is more frequent than the lease needs.
    pub(super) fn new(lease: Duration, renew_every: Option<Duration>) -> Self {
        let lease = lease.clamp(MIN_LEASE, MAX_LEASE);
        let renew_every = renew_every.unwrap_or(lease / 3).clamp(lease / 10, lease / 2);
        LeaseTiming { lease, renew_every }
    }
}

/// One held message's lease.
struct Held {
    token: Arc<str>,
    endpoint_id: String,
}

/// A message whose lease a renewal found gone (taken over, or ended by another statement).
pub(super) struct Lost {
    pub id: String,
    pub token: Arc<str>,
    pub endpoint_id: String,
}

/// Every message this worker holds a lease on, by id: claimed and not yet let go of. Shared by the loop
/// (which adds claims and lets go of what it hands back), the recorder (which lets go of what it wrote) and
/// the renewal task (which reads it). Each critical section is one short update or copy.
#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<String, Held>>,
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        // Every critical section is a single update, so the map is consistent even after a panic in one.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts renewing these claims. Returns the leases they displace: a message claimed again while this
    /// worker still held it under an older token (its lease lapsed, say while the process stalled, and this
    /// worker's own claim took it back), whose older copy must not be attempted as well.
    pub(super) fn hold(&self, claimed: &[Claimed]) -> Vec<Lost> {
        let mut held = self.lock();
        let mut displaced = Vec::new();
        for msg in claimed {
            let lease = Held {
                token: msg.token.clone(),
                endpoint_id: msg.endpoint_id.clone(),
            };
            if let Some(old) = held.insert(msg.id.clone(), lease) {
                displaced.push(Lost {
                    id: msg.id.clone(),
                    token: old.token,
                    endpoint_id: old.endpoint_id,
                });
            }
        }
        displaced
    }

    /// Stops renewing these leases (written, handed back, or given up on). Only an entry with the same token
    /// goes: the same message may have been claimed again meanwhile under a new one.
    pub(super) fn let_go<'a>(&self, leases: impl IntoIterator<Item = (&'a str, &'a Arc<str>)>) {
        let mut held = self.lock();
        for (id, token) in leases {
            if held.get(id).is_some_and(|h| h.token == *token) {
                held.remove(id);
            }
        }
    }

    /// How many leases are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// The held leases as the statement's two parallel arrays.
    fn snapshot(&self) -> (Vec<String>, Vec<String>) {
        let held = self.lock();
        held.iter()
            .map(|(id, h)| (id.clone(), h.token.to_string()))
            .unzip()
    }

    /// Removes and returns the leases of `ids`/`tokens` that are not in `still_held`, where they are still
    /// the entry under that id (not let go of or replaced since the snapshot).
    fn take_lost(&self, ids: Vec<String>, tokens: &[String], still_held: &HashSet<String>) -> Vec<Lost> {
        let mut held = self.lock();
        let mut lost = Vec::new();
        for (id, token) in ids.into_iter().zip(tokens) {
            if still_held.contains(&id) || held.get(&id).is_none_or(|h| *h.token != **token) {
                continue;
            }
            if let Some(h) = held.remove(&id) {
                lost.push(Lost {
                    id,
                    token: h.token,
                    endpoint_id: h.endpoint_id,
                });
            }
        }
        lost
    }
}

/// Ends the task when dropped: the renewal must stop with the worker's `run` future, however that ends (a
/// worker dropped without shutting down must let its leases lapse, not keep them forever).
pub(super) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews every held lease each `timing.renew_every`, until aborted; sends the leases it found gone to
/// `lost`.
pub(super) async fn renew_loop<E: Executor>(
    d: Dispatcher<E>,
    leases: Arc<Leases>,
    timing: LeaseTiming,
    lost: mpsc::UnboundedSender<Vec<Lost>>,
) {
    let start = tokio::time::Instant::now()
        .checked_add(timing.renew_every)
        .unwrap_or_else(tokio::time::Instant::now);
    let mut ticks = tokio::time::interval_at(start, timing.renew_every);
    // A tick missed (a slow statement) is not made up for with a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewed_at = Instant::now();
    loop {
        ticks.tick().await;
        let (ids, tokens) = leases.snapshot();
        if ids.is_empty() {
            renewed_at = Instant::now();
            continue;
        }
        // A statement still running after a whole lease extends nothing that has not lapsed: start over.
        let renewal = tokio::time::timeout(timing.lease, renew(&d, &ids, &tokens, timing.lease)).await;
        match renewal {
            Ok(Ok(still_held)) => {
                renewed_at = Instant::now();
                let gone = leases.take_lost(ids, &tokens, &still_held);
                tracing::debug!(held = still_held.len(), lost = gone.len(), "leases renewed");
                if !gone.is_empty() {
                    // The loop outlives this task (it aborts it), so the send can only fail during teardown.
                    let _ = lost.send(gone);
                }
            }
            Ok(Err(e)) => renewal_failed(&e.to_string(), ids.len(), renewed_at, timing.lease),
            Err(_) => renewal_failed("timed out", ids.len(), renewed_at, timing.lease),
        }
    }
}

fn renewal_failed(error: &str, held: usize, renewed_at: Instant, lease: Duration) {
    let since = renewed_at.elapsed();
    if since >= lease {
        let since_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(
            error,
            held,
            since_ms,
            "lease renewal failing past the lease: other workers may take these messages over (each is then \
             attempted again; a late result here is refused)"
        );
    } else {
        tracing::warn!(error, held, "lease renewal failed; retrying at the next tick");
    }
}

/// One renewal: extends every lease of `ids`/`tokens` still held to now + `lease`; returns the ids still held
/// (renewed, or busy under another statement and held as of this one).
async fn renew<E: Executor>(
    d: &Dispatcher<E>,
    ids: &[String],
    tokens: &[String],
    lease: Duration,
) -> Result<HashSet<String>, crate::StorageError> {
    let now = d.settings().clock.now();
    let until = chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(now);
    let params = [
        Value::from(ids.to_vec()),
        Value::from(tokens.to_vec()),
        Value::from(until),
    ];
    let rows = d.query(d.sql().renew_leases, &params).await?;
    let mut still_held = HashSet::with_capacity(rows.len());
    let mut busy = 0;
    for row in &rows {
        still_held.insert(row.text(0)?);
        if row.opt_bool(1)? != Some(true) {
            busy += 1;
        }
    }
    if busy > 0 {
        tracing::debug!(
            busy,
            "leases busy under another statement; renewed at the next tick"
        );
    }
    Ok(still_held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lease_timing_always_fits_a_renewal_in_a_lease(
            lease_ms in any::<u64>(),
            every_ms in proptest::option::of(any::<u64>()),
        ) {
            let t = LeaseTiming::new(Duration::from_millis(lease_ms), every_ms.map(Duration::from_millis));
            prop_assert!((MIN_LEASE..=MAX_LEASE).contains(&t.lease));
            prop_assert!(t.renew_every >= t.lease / 10 && t.renew_every <= t.lease / 2);
            prop_assert!(!t.renew_every.is_zero());
        }
    }

    #[test]
    fn lease_timing_defaults_to_a_third_of_the_lease() {
        let t = LeaseTiming::new(DEFAULT_LEASE, None);
        assert_eq!((t.lease, t.renew_every), (DEFAULT_LEASE, DEFAULT_LEASE / 3));
        let t = LeaseTiming::new(Duration::MAX, Some(Duration::ZERO));
        assert_eq!((t.lease, t.renew_every), (MAX_LEASE, MAX_LEASE / 10));
    }

    #[test]
    fn only_the_entry_under_the_same_token_is_let_go_of_or_lost() {
        let leases = Leases::default();
        let displaced = leases.hold(&[Claimed::for_test("m1", "e"), Claimed::for_test("m2", "e")]);
        assert!(displaced.is_empty());
        let old: Arc<str> = "other".into();
        leases.let_go([("m1", &old)]);
        assert_eq!(leases.len(), 2, "a different token lets go of nothing");
        let (ids, tokens) = leases.snapshot();
        let still: HashSet<String> = ["m2".to_owned()].into();
        let lost = leases.take_lost(ids, &tokens, &still);
        assert_eq!(lost.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["m1"]);
        assert_eq!(leases.len(), 1);
        let token: Arc<str> = "token".into();
        leases.let_go([("m2", &token)]);
        assert_eq!(leases.len(), 0);
    }
}
