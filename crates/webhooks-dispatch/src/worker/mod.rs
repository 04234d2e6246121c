//! The continuous worker: claims due messages as capacity frees up, delivers them concurrently, records
//! outcomes in bulk, and shuts down without leaving anything claimed.
//!
//! Wake-ups, in order of preference: a NOTIFY from a dispatch (through a [`Listener`]), a claim that found
//! work (there is probably more), finished attempts freeing an endpoint's slots, the next scheduled retry (read from the table), and finally a poll interval
//! that bounds every sleep (it also picks up messages whose lease expired after a crash elsewhere).
//!
//! Leases are short and renewed while held ([`lease`]), so a crashed worker's messages come back within
//! about one lease while a healthy worker's slow attempts are never taken over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

mod cooldown;
mod lease;
mod pace;
mod ready;
mod record;

pub use self::lease::DEFAULT_LEASE;

use self::cooldown::Cooldown;
use self::lease::{AbortOnDrop, LeaseTiming, Leases, Lost};
use self::pace::{Pace, Went};
use self::ready::ReadyQueues;
use crate::attempt::Outcome;
use crate::dispatcher::Dispatcher;
use crate::drain::{Claimed, DeliveryReport, Record};
use crate::error::DispatchError;
use crate::store::{Executor, Listener};

/// A claim in progress: when it started (the claim's notion of now, and this process's clock) and what it
/// returned.
type ClaimFuture = std::pin::Pin<
    Box<dyn Future<Output = (DateTime<Utc>, Instant, Result<Vec<Claimed>, crate::StorageError>)> + Send>,
>;

/// Default most messages claimed per statement by a worker.
pub const DEFAULT_CLAIM_BATCH: u32 = 200;
/// Default longest sleep between two looks at the table.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default shortest time between two claims, and between two outcome writes, while traffic is dense.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_millis(8);
/// Default time in-flight attempts get to finish after shutdown is requested.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// Longest accepted poll interval and cooldown: beyond these a worker would look like a stuck one.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_COOLDOWN: Duration = Duration::from_secs(1);

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
    cooldown: Duration,
    lease: Duration,
    renew_interval: Option<Duration>,
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
            cooldown: DEFAULT_COOLDOWN,
            lease: DEFAULT_LEASE,
            renew_interval: None,
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

    /// Longest sleep between looks at the table (default 1 s, clamped to 1 ms..=1 h). Messages whose lease
    /// lapsed elsewhere (a crashed worker) are found by these looks, so recovery takes up to the lease plus
    /// this.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.clamp(Duration::from_millis(1), MAX_POLL_INTERVAL);
        self
    }

    /// How long a claimed message stays leased to this worker without a renewal (default 10 s, clamped to
    /// 1 s..=24 h). The worker renews every lease it holds (queued, in flight, or waiting to be recorded)
    /// every [`renew_interval`](Self::renew_interval), so a healthy worker keeps its messages however long
    /// an attempt takes; if it dies, its messages are due again one lease after its last renewal. Shorter
    /// means faster recovery, at one more small statement per interval; it must stay well above the clock
    /// difference between machines running workers (a lease is stamped with this machine's clock and judged
    /// against theirs) and above any pause the process may suffer (a stop longer than the lease lets another
    /// worker take the messages over: they are then attempted twice, and this worker's late results refused).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often held leases are renewed (default a third of the lease; clamped to a tenth..=half of it).
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = Some(interval);
        self
    }

    /// While traffic is dense, the shortest time from one claim's start to the next, and likewise between
    /// two writes of outcomes (default 8 ms; zero turns it off; at most 1 s). Only a claim or write that
    /// moved at least 8 rows makes the next one wait, so at a low rate every message is still claimed as soon
    /// as it is announced; under a stream of single dispatches the same messages are taken in fewer, larger
    /// statements, which leaves the database more time for the dispatches themselves.
    pub fn cooldown(mut self, interval: Duration) -> Self {
        self.cooldown = interval.min(MAX_COOLDOWN);
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
            cooldown,
            lease,
            renew_interval,
        } = self;
        let timing = LeaseTiming::new(lease, renew_interval);
        let leases = Arc::new(Leases::default());
        let (records_tx, records_rx) = mpsc::unbounded_channel::<Record>();
        let recorder = tokio::spawn(record::record_loop(
            d.clone(),
            records_rx,
            Cooldown::new(cooldown),
            leases.clone(),
        ));
        let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<Vec<Lost>>();
        // Renews through shutdown's grace period too, and stops when this future ends or is dropped.
        let _renewal = AbortOnDrop(tokio::spawn(lease::renew_loop(
            d.clone(),
            leases.clone(),
            timing,
            lost_tx,
        )));
        let mut state = State::new(&d, claim_batch, poll_interval, cooldown, timing.lease, leases);
        tokio::pin!(shutdown);

        loop {
            state.start_attempts(&d, &records_tx);
            state.maybe_claim(&d);
            let listening =
                listener.is_some() && state.listener_down_until.is_none_or(|t| Instant::now() >= t);
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(lost) = lost_rx.recv() => state.lost(&lost),
                (now, started, claimed) = async { state.claiming.as_mut().expect("guarded by the branch condition").await },
                    if state.claiming.is_some() => state.claimed(&d, now, started, claimed).await,
                Some(joined) = state.tasks.join_next_with_id(), if !state.tasks.is_empty() => state.joined(&d, joined),
                woke = recv_or_pending(listener.as_deref_mut(), listening) => state.woke(woke),
                () = d.settings().local_wake.notified() => state.woke(Ok(())),
                () = tokio::time::sleep_until(state.wake_at.into()), if !state.more && state.claiming.is_none() => {
                    state.timer_fired();
                }
                // Only to run `maybe_claim` again once a cooldown that held a claim back is over.
                () = sleep_until_some(state.cooling_until), if state.cooling_until.is_some() => {}
            }
        }
        state.shut_down(&d, shutdown_grace, records_tx, recorder).await
    }
}

/// What one attempt task reports back to the loop once its record is on its way to the recorder.
struct Finished {
    endpoint_id: String,
    /// The message's next retry, if any, so an idle worker wakes for its own retries.
    next_retry: Option<DateTime<Utc>>,
    went: Went,
    latency: Duration,
}

/// The loop's state between wake-ups.
struct State {
    concurrency: usize,
    claim_batch: u32,
    poll_interval: Duration,
    lease: Duration,
    /// What this worker holds a lease on, for the renewal task.
    leases: Arc<Leases>,
    /// Claim only when at least this many messages can be taken, or nothing is held.
    claim_threshold: usize,
    catch_up_after: Duration,
    tasks: JoinSet<Finished>,
    /// Per attempt task: its message id, lease token and endpoint.
    in_flight: HashMap<tokio::task::Id, (String, Arc<str>, String)>,
    /// Claimed and not started, per endpoint. Holds up to one claim batch beyond the free slots, so a claim's
    /// latency overlaps running attempts instead of leaving slots idle.
    ready: ReadyQueues,
    pace: Pace,
    claiming: Option<ClaimFuture>,
    cooldown: Cooldown,
    /// Set while a claim is due but held back by the cooldown.
    cooling_until: Option<Instant>,
    /// `more`: claim as soon as capacity allows. It stays set while claims return rows; an empty claim clears
    /// it until a wake-up, or until enough attempts have finished that endpoints skipped for being at their
    /// cap may have room again (`since_empty`), so a single busy endpoint keeps flowing without a claim per
    /// delivery.
    more: bool,
    since_empty: usize,
    wake_at: Instant,
    /// The earliest retry among this worker's own results: known before the recorder has written it, so an
    /// empty claim in between cannot make the worker sleep past it.
    own_retry_at: Option<Instant>,
    catch_up: Option<Instant>,
    listener_down_until: Option<Instant>,
    /// Attempts finished so far, and at the start of the claim in flight: an empty claim only means "no
    /// work" if no endpoint slot was freed while it ran.
    finished: u64,
    finished_at_claim: u64,
}

impl State {
    fn new<E: Executor>(
        d: &Dispatcher<E>,
        claim_batch: u32,
        poll_interval: Duration,
        cooldown: Duration,
        lease: Duration,
        leases: Arc<Leases>,
    ) -> Self {
        let settings = d.settings();
        let cap = settings.limiter.cap();
        State {
            concurrency: settings.concurrency,
            claim_batch,
            poll_interval,
            lease,
            leases,
            claim_threshold: (settings.concurrency / 4).max(1),
            catch_up_after: settings.notify.as_ref().map(|n| n.interval()).unwrap_or_default(),
            tasks: JoinSet::new(),
            in_flight: HashMap::new(),
            ready: ReadyQueues::new(cap),
            pace: Pace::new(cap),
            claiming: None,
            cooldown: Cooldown::new(cooldown),
            cooling_until: None,
            more: true,
            since_empty: 0,
            wake_at: Instant::now(),
            own_retry_at: None,
            catch_up: None,
            listener_down_until: None,
            finished: 0,
            finished_at_claim: 0,
        }
    }

    /// Starts queued messages while the worker has free slots and their endpoints do.
    fn start_attempts<E: Executor + Clone + 'static>(
        &mut self,
        d: &Dispatcher<E>,
        records: &mpsc::UnboundedSender<Record>,
    ) {
        while self.tasks.len() < self.concurrency {
            let Some((msg, slot)) = self.ready.start_next(&d.settings().limiter) else {
                break;
            };
            let d = d.clone();
            let tx = records.clone();
            let key = (msg.id.clone(), msg.token.clone(), msg.endpoint_id.clone());
            let handle = self.tasks.spawn(async move {
                let record = d
                    .attempt_in_slot(&msg, slot, d.settings().clock.now(), Instant::now())
                    .await;
                let finished = Finished {
                    endpoint_id: record.endpoint_id().to_owned(),
                    next_retry: record.next_attempt_at,
                    went: match (record.outcome, record.status()) {
                        (Outcome::Delivered, _) => Went::Delivered,
                        (_, Some(_)) => Went::Refused,
                        (_, None) => Went::Unreachable,
                    },
                    latency: record.latency(),
                };
                // The recorder outlives every task, so the send cannot fail.
                let _ = tx.send(record);
                finished
            });
            self.in_flight.insert(handle.id(), key);
        }
    }

    /// Starts a claim if none is running, there is reason to, and room for a worthwhile batch.
    fn maybe_claim<E: Executor + Clone + 'static>(&mut self, d: &Dispatcher<E>) {
        let waiting = match self.ready.len() {
            0 => 0,
            _ => self.ready.waiting_for_owner_or_host(&d.settings().limiter),
        };
        let held = (self.tasks.len() + self.ready.len()).saturating_sub(waiting);
        let room = self
            .concurrency
            .saturating_add(self.claim_batch as usize)
            .saturating_sub(held);
        self.cooling_until = None;
        if self.claiming.is_some() || !self.more || (held > 0 && room < self.claim_threshold) {
            return;
        }
        let started = Instant::now();
        if let Some(until) = self.cooldown.wait_until(started) {
            self.cooling_until = Some(until);
            return;
        }
        let limit = u32::try_from(room).unwrap_or(u32::MAX).min(self.claim_batch);
        self.finished_at_claim = self.finished;
        let d = d.clone();
        let (lease, ahead) = (self.lease, self.pace.allowances());
        self.claiming = Some(Box::pin(async move {
            let now = d.settings().clock.now();
            let claimed = d.claim_ahead(now, lease, limit, &ahead).await;
            (now, started, claimed)
        }));
    }

    async fn claimed<E: Executor>(
        &mut self,
        d: &Dispatcher<E>,
        now: DateTime<Utc>,
        started: Instant,
        claimed: Result<Vec<Claimed>, crate::StorageError>,
    ) {
        self.claiming = None;
        match claimed {
            Ok(claimed) => {
                self.cooldown.moved(started, claimed.len());
                self.more = !claimed.is_empty() || self.finished > self.finished_at_claim;
                if !self.more {
                    self.since_empty = 0;
                    self.wake_at = next_wake(d, now, self.catch_up.take(), self.poll_interval).await;
                    if let Some(t) = self.own_retry_at {
                        self.wake_at = self.wake_at.min(t);
                    }
                }
                let displaced = self.leases.hold(&claimed);
                self.ready.extend(claimed);
                self.lost(&displaced);
            }
            Err(e) => {
                tracing::warn!(error = %e, error.source = ?std::error::Error::source(&e), "claim failed; retrying after the poll interval");
                self.more = false;
                self.wake_at = later(self.poll_interval);
            }
        }
    }

    fn joined<E: Executor + Clone + 'static>(
        &mut self,
        d: &Dispatcher<E>,
        joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((id, done)) => {
                self.in_flight.remove(&id);
                self.ready.finished(&done.endpoint_id);
                self.pace.observe(&done.endpoint_id, done.went, done.latency);
                if self.pace.ahead(&done.endpoint_id) == 0 {
                    self.hand_back(d, &done.endpoint_id);
                }
                self.finished += 1;
                self.since_empty += 1;
                if self.since_empty >= self.claim_threshold || self.tasks.is_empty() {
                    self.more = true;
                }
                if let Some(next) = done.next_retry {
                    let until = (next - d.settings().clock.now()).to_std().unwrap_or_default();
                    let at = later(until);
                    self.own_retry_at = Some(self.own_retry_at.map_or(at, |t| t.min(at)));
                    self.wake_at = self.wake_at.min(at);
                }
            }
            Err(e) => {
                if let Some((id, token, endpoint_id)) = self.in_flight.remove(&e.id()) {
                    self.ready.finished(&endpoint_id);
                    // No record will come: let the lease lapse so the message is attempted again.
                    self.leases.let_go([(id.as_str(), &token)]);
                }
                tracing::error!(error = %e, "delivery task failed; its message is retried after the lease");
            }
        }
    }

    /// Releases the claim-ahead of an endpoint that stopped keeping up (see `ReadyQueues::take_surplus`).
    /// In the background: the loop must not wait on the database for it, and a failure only means the
    /// messages come back when their lease expires.
    fn hand_back<E: Executor + Clone + 'static>(&mut self, d: &Dispatcher<E>, endpoint_id: &str) {
        let queued = self.ready.take_surplus(endpoint_id);
        if queued.is_empty() {
            return;
        }
        let claims: Vec<(String, Arc<str>)> =
            queued.iter().map(|m| (m.id.clone(), m.token.clone())).collect();
        // Not renewed from now on: if the release fails, they come back one lease later.
        self.leases.let_go(claims.iter().map(|(id, t)| (id.as_str(), t)));
        let d = d.clone();
        tokio::spawn(async move {
            if let Err(e) = d.release(&claims).await {
                tracing::warn!(error = %e, count = claims.len(), "could not hand back queued messages; they return after their lease");
            }
            // The claims' holds on the endpoint end only now, so no claim of this process takes the rows again
            // while they are still leased to it.
            drop(queued);
        });
    }

    fn woke(&mut self, woke: Result<(), crate::StorageError>) {
        match woke {
            Ok(()) => {
                self.more = true;
                self.catch_up = Some(later(self.catch_up_after));
                self.listener_down_until = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "listen connection lost; polling until it is back");
                self.listener_down_until = Some(later(self.poll_interval));
            }
        }
    }

    /// Leases found lost (a renewal found them taken over, or this worker's own claim took the message back
    /// under a new token): a message still queued under such a lease is dropped rather than attempted a
    /// second time beside its new holder (one in flight finishes, and its result is refused as stale).
    fn lost(&mut self, lost: &[Lost]) {
        let dropped = self.ready.drop_lost(lost);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "queued messages dropped: their leases lapsed and were taken over (renewals failed for longer than the lease)"
            );
            self.more = true;
        }
    }

    fn timer_fired(&mut self) {
        self.more = true;
        if self.own_retry_at.is_some_and(|t| t <= Instant::now()) {
            self.own_retry_at = None;
        }
    }

    /// No more claims. A claim already under way is finished so its leases are known; in-flight attempts get
    /// the grace period; every claimed message not finished is handed back; every outcome is written.
    async fn shut_down<E: Executor + Clone + 'static>(
        mut self,
        d: &Dispatcher<E>,
        grace: Duration,
        records: mpsc::UnboundedSender<Record>,
        recorder: tokio::task::JoinHandle<(DeliveryReport, u64)>,
    ) -> Result<WorkerReport, DispatchError> {
        if let Some(claim) = self.claiming.take() {
            if let (_, _, Ok(claimed)) = claim.await {
                self.ready.extend(claimed);
            }
        }
        let in_flight = &mut self.in_flight;
        let tasks = &mut self.tasks;
        let drained = tokio::time::timeout(grace, async {
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
        drop(records);
        let (deliveries, discarded) = recorder.await.unwrap_or_default();
        let unfinished: Vec<(String, Arc<str>)> = self
            .in_flight
            .into_values()
            .map(|(id, token, _)| (id, token))
            .chain(
                self.ready
                    .drain()
                    .into_iter()
                    .map(|m| (m.id.clone(), m.token.clone())),
            )
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
    let mut wake = later(poll_interval);
    if let Some(t) = catch_up {
        wake = wake.min(t);
    }
    if let Ok(rows) = d.query(d.sql().next_due, &[now.into()]).await {
        if let Some(Ok(Some(next))) = rows.first().map(|r| r.opt_timestamp(0)) {
            let until = (next - now).to_std().unwrap_or_default();
            wake = wake.min(later(until));
        }
    }
    wake
}

/// `d` from now, or a year from now if that is past what an `Instant` can hold (a retry scheduled for the
/// year 9999 only needs to be later than any poll interval).
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
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
