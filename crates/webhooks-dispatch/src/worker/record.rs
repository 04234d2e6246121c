//! The recorder: a worker's outcomes written in bulk (group commit), off the claim/attempt loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::cooldown::Cooldown;
use super::lease::Leases;
use crate::dispatcher::Dispatcher;
use crate::drain::{DeliveryReport, Record};
use crate::store::Executor;

/// Writes outcomes as they arrive, as many per statement as have queued up meanwhile (group commit), spaced
/// by the cooldown while they are dense. Waiting costs no delivery latency: the receiver has its message.
pub(super) async fn record_loop<E: Executor>(
    d: Dispatcher<E>,
    mut rx: mpsc::UnboundedReceiver<Record>,
    mut cooldown: Cooldown,
    leases: Arc<Leases>,
) -> (DeliveryReport, u64) {
    let mut report = DeliveryReport::default();
    let mut discarded = 0;
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        if let Some(until) = cooldown.wait_until(Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        batch.push(first);
        while batch.len() < crate::drain::MAX_BATCH as usize {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        cooldown.moved(Instant::now(), batch.len());
        let mut backoff = Duration::from_millis(50);
        for attempt in 1.. {
            match d.record(&batch).await {
                Ok(recorded) => {
                    for r in &batch {
                        if recorded.contains(&r.id) {
                            report.count(r.outcome);
                        } else {
                            discarded += 1;
                        }
                    }
                    break;
                }
                // Unrecorded results keep their leases: after expiry the messages are attempted again, so
                // giving up loses nothing but causes a repeat delivery.
                Err(e) if attempt >= 5 => {
                    tracing::error!(error = %e, count = batch.len(), "could not record attempts; they will be retried after the lease");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recording attempts failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
        // Written, refused as stale, or given up on: either way no longer renewed, so a result that could not
        // be written lets its lease lapse and the message is attempted again.
        leases.let_go(batch.iter().map(|r| (r.id.as_str(), &r.token)));
        batch.clear();
    }
    (report, discarded)
}
