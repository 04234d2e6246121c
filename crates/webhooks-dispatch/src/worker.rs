//! The continuous worker: claims due messages as capacity frees up, delivers them concurrently, records
//! outcomes in bulk, and shuts down without leaving anything claimed.
//!
//! Wake-ups, in order of preference: a NOTIFY from a dispatch (through a [`Listener`]), a claim that found
//! work (there is probably more), finished attempts freeing an endpoint's slots, the next scheduled retry (read from the table), and finally a poll interval
//! that bounds every sleep (it also picks up messages whose lease expired after a crash elsewhere).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::dispatcher::Dispatcher;
use crate::drain::{Claimed, DeliveryReport, Record};
use crate::error::DispatchError;
use crate::store::{Executor, Listener};

/// A claim in progress: when it started (the claim's notion of now) and what it returned.
type ClaimFuture = std::pin::Pin<
    Box<dyn Future<Output = (DateTime<Utc>, Result<Vec<Claimed>, crate::StorageError>)> + Send>,
>;

/// Default most messages claimed per statement by a worker.
pub const DEFAULT_CLAIM_BATCH: u32 = 200;
/// Default longest sleep between two looks at the table.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default time in-flight attempts get to finish after shutdown is requested.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Extra lease beyond two attempt deadlines (one waiting for the endpoint's slot, one attempting), covering
/// recording latency and clock skew between machines.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// What a worker did over its lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerReport {
    /// Recorded attempts by outcome.
    pub deliveries: DeliveryReport,
    /// Claimed messages handed back unattempted at shutdown.
    pub released: u64,
    /// Results discarded because another drain had taken the lease over.
    pub discarded: u64,
}

/// Delivers continuously until told to stop. Run several per database, in one process or many.
pub struct Worker<E> {
    dispatcher: Dispatcher<E>,
    listener: Option<Box<dyn Listener>>,
    claim_batch: u32,
    poll_interval: Duration,
    shutdown_grace: Duration,
}

impl<E: Executor + Clone + 'static> Worker<E> {
    /// A worker using the dispatcher's configuration (concurrency, per-endpoint cap, retry policy, TLS, SSRF).
    pub fn new(dispatcher: Dispatcher<E>) -> Self {
        Worker {
            dispatcher,
            listener: None,
            claim_batch: DEFAULT_CLAIM_BATCH,
            poll_interval: DEFAULT_POLL_INTERVAL,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Wakes on dispatch NOTIFYs instead of waiting for the next poll.
    pub fn listener(mut self, listener: impl Listener + 'static) -> Self {
        self.listener = Some(Box::new(listener));
        self
    }

    /// Most messages claimed per statement (default 200, clamped to 1..=1000).
    pub fn claim_batch(mut self, n: u32) -> Self {
        self.claim_batch = n.clamp(1, crate::drain::MAX_BATCH);
        self
    }

    /// Longest sleep between looks at the table (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long in-flight attempts may run after shutdown is requested (default 15 s); the rest are
    /// aborted and their messages released.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Runs until `shutdown` completes, then stops claiming, lets in-flight attempts finish within the grace
    /// period, aborts and releases the rest, and writes every outcome before returning. Storage errors while
    /// running are logged and retried (the worker keeps going); the returned error is only for a failure to
    /// release claims at shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<WorkerReport, DispatchError> {
        // Taken apart so the future holds no `&self` (the listener is Send but not Sync).
        let Worker {
            dispatcher: d,
            mut listener,
            claim_batch,
            poll_interval,
            shutdown_grace,
        } = self;
        let settings_concurrency = d.settings().concurrency;
        let lease = d.settings().attempt_timeout.saturating_mul(2) + LEASE_MARGIN;
        // Claim in batches: only when at least a quarter of `concurrency` can be taken, or nothing is held.
        let claim_threshold = (settings_concurrency / 4).max(1);
        let catch_up_after = d
            .settings()
            .notify
            .as_ref()
            .map(|n| n.interval())
            .unwrap_or_default();

        let (records_tx, records_rx) = mpsc::unbounded_channel::<Record>();
        let recorder = tokio::spawn(record_loop(d.clone(), records_rx));
        // Each task yields its message's next retry time, if any, so an idle worker wakes for its own retries.
        let mut tasks: JoinSet<Option<DateTime<Utc>>> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, (String, Arc<str>)> = HashMap::new();

        // `more`: claim as soon as capacity allows. It stays set while claims return rows; an empty claim
        // clears it until a wake-up, or until enough attempts have finished that endpoints skipped for being
        // at their cap may have room again (`since_empty`), so a single busy endpoint keeps flowing without a
        // claim per delivery.
        let mut more = true;
        let mut since_empty = 0usize;
        let mut wake_at = Instant::now();
        // The earliest retry among this worker's own results: known before the recorder has written it, so
        // an empty claim in between cannot make the worker sleep past it.
        let mut own_retry_at: Option<Instant> = None;
        let mut catch_up: Option<Instant> = None;
        let mut listener_down_until: Option<Instant> = None;
        tokio::pin!(shutdown);

        // Claims run concurrently with the loop and fill `ready`, which may hold up to one claim batch beyond
        // the free slots: a claim's latency then overlaps running attempts instead of leaving slots idle, and
        // a slow claim (say, one scanning past a hanging endpoint's queue) does not throttle delivery.
        let mut ready: VecDeque<Claimed> = VecDeque::new();
        let mut claiming: Option<ClaimFuture> = None;
        // Attempts finished so far, and at the start of the claim in flight: an empty claim only means "no
        // work" if no endpoint slot was freed while it ran.
        let mut finished = 0u64;
        let mut finished_at_claim = 0u64;
        let max_held = settings_concurrency + claim_batch as usize;

        loop {
            while tasks.len() < settings_concurrency {
                let Some(msg) = ready.pop_front() else { break };
                let d = d.clone();
                let tx = records_tx.clone();
                let key = (msg.id.clone(), msg.token.clone());
                let handle = tasks.spawn(async move {
                    let record = d
                        .attempt_claimed(&msg, d.settings().clock.now(), Instant::now())
                        .await;
                    let next = record.next_attempt_at;
                    // The recorder outlives every task, so the send cannot fail.
                    let _ = tx.send(record);
                    next
                });
                in_flight.insert(handle.id(), key);
            }
            let held = tasks.len() + ready.len();
            let room = max_held.saturating_sub(held);
            if claiming.is_none() && more && (held == 0 || room >= claim_threshold) {
                let limit = u32::try_from(room).unwrap_or(u32::MAX).min(claim_batch);
                finished_at_claim = finished;
                let d = d.clone();
                claiming = Some(Box::pin(async move {
                    let now = d.settings().clock.now();
                    let claimed = d.claim(now, lease, limit).await;
                    (now, claimed)
                }));
            }

            let listening = listener.is_some() && listener_down_until.is_none_or(|t| Instant::now() >= t);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                (now, claimed) = async { claiming.as_mut().expect("guarded by the branch condition").await },
                    if claiming.is_some() =>
                {
                    claiming = None;
                    match claimed {
                        Ok(claimed) => {
                            more = !claimed.is_empty() || finished > finished_at_claim;
                            if !more {
                                since_empty = 0;
                                wake_at = next_wake(&d, now, catch_up.take(), poll_interval).await;
                                if let Some(t) = own_retry_at {
                                    wake_at = wake_at.min(t);
                                }
                            }
                            ready.extend(claimed);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, error.source = ?std::error::Error::source(&e), "claim failed; retrying after the poll interval");
                            more = false;
                            wake_at = Instant::now() + poll_interval;
                        }
                    }
                }
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    match joined {
                        Ok((id, next_retry)) => {
                            in_flight.remove(&id);
                            finished += 1;
                            since_empty += 1;
                            if since_empty >= claim_threshold || tasks.is_empty() {
                                more = true;
                            }
                            if let Some(next) = next_retry {
                                let until = (next - d.settings().clock.now()).to_std().unwrap_or_default();
                                let at = Instant::now() + until;
                                own_retry_at = Some(own_retry_at.map_or(at, |t| t.min(at)));
                                wake_at = wake_at.min(at);
                            }
                        }
                        Err(e) => {
                            in_flight.remove(&e.id());
                            tracing::error!(error = %e, "delivery task failed; its message is retried after the lease");
                        }
                    }
                }
                woke = recv_or_pending(listener.as_deref_mut(), listening) => {
                    match woke {
                        Ok(()) => {
                            more = true;
                            catch_up = Some(Instant::now() + catch_up_after);
                            listener_down_until = None;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "listen connection lost; polling until it is back");
                            listener_down_until = Some(Instant::now() + poll_interval);
                        }
                    }
                }
                () = d.settings().local_wake.notified() => {
                    more = true;
                    catch_up = Some(Instant::now() + catch_up_after);
                }
                () = tokio::time::sleep_until(wake_at.into()), if !more && claiming.is_none() => {
                    more = true;
                    if own_retry_at.is_some_and(|t| t <= Instant::now()) {
                        own_retry_at = None;
                    }
                }
            }
        }

        // Shutdown: no more claims. A claim already under way is finished so its leases are known, and every
        // claimed message not yet started is handed back below.
        if let Some(claim) = claiming.take() {
            if let (_, Ok(claimed)) = claim.await {
                ready.extend(claimed);
            }
        }
        // Let in-flight attempts finish within the grace period.
        let drained = tokio::time::timeout(shutdown_grace, async {
            while let Some(joined) = tasks.join_next_with_id().await {
                let id = match &joined {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                in_flight.remove(&id);
            }
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while let Some(joined) = tasks.join_next_with_id().await {
                // A task that finished just before the abort has sent its record: it is not in flight any more.
                if let Ok((id, _)) = joined {
                    in_flight.remove(&id);
                }
            }
        }
        drop(records_tx);
        let (deliveries, discarded) = recorder.await.unwrap_or_default();
        let unfinished: Vec<(String, Arc<str>)> = in_flight
            .into_values()
            .chain(ready.iter().map(|m| (m.id.clone(), m.token.clone())))
            .collect();
        let released = d.release(&unfinished).await?;
        Ok(WorkerReport {
            deliveries,
            released: released as u64,
            discarded,
        })
    }
}

/// When to look again after a claim found less than it asked for: the next scheduled retry, a catch-up
/// look one debounce interval after a NOTIFY, or the poll interval, whichever is first.
async fn next_wake<E: Executor>(
    d: &Dispatcher<E>,
    now: DateTime<Utc>,
    catch_up: Option<Instant>,
    poll_interval: Duration,
) -> Instant {
    let mut wake = Instant::now() + poll_interval;
    if let Some(t) = catch_up {
        wake = wake.min(t);
    }
    if let Ok(rows) = d.query(d.sql().next_due, &[now.into()]).await {
        if let Some(Ok(Some(next))) = rows.first().map(|r| r.opt_timestamp(0)) {
            let until = (next - now).to_std().unwrap_or_default();
            wake = wake.min(Instant::now() + until);
        }
    }
    wake
}

async fn recv_or_pending(
    listener: Option<&mut (dyn Listener + 'static)>,
    listening: bool,
) -> Result<(), crate::StorageError> {
    match listener {
        Some(l) if listening => l.recv().await,
        _ => std::future::pending().await,
    }
}

/// Writes outcomes as they arrive, as many per statement as have queued up meanwhile (group commit).
async fn record_loop<E: Executor>(
    d: Dispatcher<E>,
    mut rx: mpsc::UnboundedReceiver<Record>,
) -> (DeliveryReport, u64) {
    let mut report = DeliveryReport::default();
    let mut discarded = 0;
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < crate::drain::MAX_BATCH as usize {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
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
                    backoff *= 2;
                }
            }
        }
        batch.clear();
    }
    (report, discarded)
}
