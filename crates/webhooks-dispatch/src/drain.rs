//! Claiming, attempting and recording: the delivery machinery shared by [`Dispatcher::deliver_due`] and the
//! continuous [`Worker`](crate::Worker).
//!
//! A drain stamps the rows it claims with a lease token and expiry. Other drains skip leased rows, so a message
//! is never attempted by two drains at once; if a drain dies, its rows become due again when the lease
//! expires; and a drain whose lease was taken over cannot record its late result (the token no longer
//! matches). Delivery is therefore at-least-once, and exactly-once whenever drains finish within their lease.
//! Outcomes are recorded in bulk (one statement for many attempts), so database round trips per delivery
//! stay far below one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::attempt::Outcome;
use crate::concurrency::{self, EndpointLimiter, Held, Route, Slot};
use crate::config::{later, OnGone, Settings};
use crate::delivery::{Attempted, Outgoing};
use crate::dispatcher::Dispatcher;
use crate::endpoint::DisabledReason;
use crate::error::{DispatchError, StorageError};
use crate::headers::WireHeaders;
use crate::id;
use crate::observe::{AttemptEvent, LifecycleEvent, QueueStats};
use crate::retry::{AttemptResult, Decision};
use crate::signing::SigningSecret;
use crate::store::{Executor, Row, Value};

/// Default number of messages claimed by one `deliver_due` call.
pub const DEFAULT_BATCH: u32 = 50;
/// Largest accepted batch.
pub const MAX_BATCH: u32 = 1000;
/// Extra lease time beyond the worst-case drain duration, for clock skew and database latency.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Options for one [`Dispatcher::deliver_due`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliverDue {
    /// The time to treat as now (default: the dispatcher's clock). Messages due at or before it are attempted,
    /// and retries are scheduled relative to it.
    pub now: Option<DateTime<Utc>>,
    /// How many messages to claim, 1..=1000 (default 50).
    pub batch: Option<u32>,
}

/// What one drain did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Attempts made and recorded.
    pub attempted: u64,
    /// Attempts that delivered (2xx).
    pub delivered: u64,
    /// Attempts that failed transiently and were rescheduled.
    pub retried: u64,
    /// Attempts after which the message was dead-lettered.
    pub dead: u64,
}

impl DeliveryReport {
    pub(crate) fn count(&mut self, outcome: Outcome) {
        self.attempted += 1;
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Retrying => self.retried += 1,
            Outcome::Dead => self.dead += 1,
        }
    }
}

/// A message this process holds a lease on.
pub(crate) struct Claimed {
    pub id: String,
    pub endpoint_id: String,
    /// The keys of its endpoint's, owner's and host's caps.
    pub route: Route,
    pub token: Arc<str>,
    payload: String,
    attempt_no: u32,
    url: String,
    /// Every key signing this attempt, newest first; `None` when one of them does not open or parse.
    keys: Option<Vec<SigningSecret>>,
    /// `None` when the stored headers are unusable: the attempt is refused rather than sent without them.
    headers: Option<WireHeaders>,
    /// Counts against the endpoint's cap in this process until the attempt is over.
    _held: Held,
}

impl Claimed {
    fn from_row(
        row: &Row,
        token: &Arc<str>,
        limiter: &Arc<EndpointLimiter>,
        settings: &Settings,
    ) -> Result<Self, StorageError> {
        let endpoint_id = row.text(1)?;
        let attempts =
            u32::try_from(row.int(3)?).map_err(|_| StorageError::decode("attempts out of range"))?;
        let url = row.text(4)?;
        let route = Route {
            endpoint_id: endpoint_id.clone(),
            owner_id: row.text(7)?.into(),
            host: concurrency::host_of(&url),
        };
        Ok(Claimed {
            id: row.text(0)?,
            _held: limiter.hold(&route),
            route,
            endpoint_id,
            token: token.clone(),
            payload: row.text(2)?,
            attempt_no: attempts.saturating_add(1),
            url,
            keys: row
                .opt_text(5)?
                .and_then(|listed| settings.opened_keys.open(settings.cipher.as_deref(), &listed)),
            headers: WireHeaders::decode(&row.text(6)?),
        })
    }
}

#[cfg(test)]
impl Claimed {
    /// A claimed message with nothing to deliver, for tests of the worker's queues.
    pub(crate) fn for_test(id: &str, endpoint_id: &str) -> Claimed {
        Claimed::for_test_of(id, endpoint_id, "owner", "host")
    }

    /// [`for_test`](Self::for_test) of a given owner and host.
    pub(crate) fn for_test_of(id: &str, endpoint_id: &str, owner_id: &str, host: &str) -> Claimed {
        let limiter = Arc::new(EndpointLimiter::new(crate::concurrency::Caps {
            per_endpoint: 1,
            per_owner: 1,
            per_host: 1,
        }));
        let route = Route {
            endpoint_id: endpoint_id.to_owned(),
            owner_id: owner_id.into(),
            host: host.into(),
        };
        Claimed {
            id: id.to_owned(),
            endpoint_id: endpoint_id.to_owned(),
            _held: limiter.hold(&route),
            route,
            token: "token".into(),
            payload: String::new(),
            attempt_no: 1,
            url: String::new(),
            keys: None,
            headers: None,
        }
    }
}

/// The outcome of one attempt, waiting to be written.
pub(crate) struct Record {
    pub id: String,
    pub token: Arc<str>,
    pub outcome: Outcome,
    attempt_no: u32,
    endpoint_id: String,
    attempted_at: DateTime<Utc>,
    status: Option<u16>,
    latency_ms: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    error: Option<String>,
}

impl Record {
    /// The endpoint's HTTP status, if it answered.
    pub(crate) fn status(&self) -> Option<u16> {
        self.status
    }

    /// How long the attempt took.
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.latency_ms).unwrap_or(0))
    }

    pub(crate) fn endpoint_id(&self) -> &str {
        &self.endpoint_id
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<E: Executor> Dispatcher<E> {
    /// Attempts every due message (up to `batch`), records each attempt, and schedules retries or
    /// dead-letters. Safe to call from many tasks and processes at once. Runs up to the configured concurrency
    /// in parallel, at most the per-endpoint cap per endpoint, and records all outcomes in one statement.
    pub async fn deliver_due(&self, opts: DeliverDue) -> Result<DeliveryReport, DispatchError> {
        let batch = opts.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(DispatchError::input("batch", "must be between 1 and 1000"));
        }
        let settings = self.settings();
        let now = opts.now.unwrap_or_else(|| settings.clock.now());
        // The lease must outlast the whole drain: with `concurrency` attempts in flight, the last of `batch`
        // messages starts after ceil(batch / concurrency) attempt deadlines at worst, plus one more if it had
        // to wait for its endpoint's slot.
        let waves = usize::try_from(batch)
            .unwrap_or(usize::MAX)
            .div_ceil(settings.concurrency)
            + 1;
        let lease = settings
            .attempt_timeout
            .saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX))
            .saturating_add(LEASE_MARGIN);
        let claimed = self.claim(now, lease, batch).await?;

        let started = Instant::now();
        let records: Vec<Record> = stream::iter(claimed)
            .map(|msg| async move { self.attempt_claimed(&msg, now, started).await })
            .buffer_unordered(settings.concurrency)
            .collect()
            .await;
        // Unrecorded messages (a storage error here) keep their lease and are retried after it expires.
        let recorded = self.record(&records).await?;
        let mut report = DeliveryReport::default();
        for r in records.iter().filter(|r| recorded.contains(&r.id)) {
            report.count(r.outcome);
        }
        Ok(report)
    }

    /// The backlog at `now` (default: the clock's now): how many pending messages are due and not held by a
    /// drain, and since when the oldest of them has been due. One indexed read; for metrics.
    pub async fn queue_stats(&self, now: Option<DateTime<Utc>>) -> Result<QueueStats, DispatchError> {
        let now = now.unwrap_or_else(|| self.settings().clock.now());
        let rows = self.query(self.sql().queue_stats, &[now.into()]).await?;
        let row = rows
            .first()
            .ok_or_else(|| StorageError::decode("no row from queue stats"))?;
        Ok(QueueStats {
            due: u64::try_from(row.int(0)?).unwrap_or(0),
            oldest_due_at: row.opt_timestamp(1)?,
        })
    }

    /// Claims up to `limit` due messages under a fresh lease token, within each endpoint's free slots.
    pub(crate) async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StorageError> {
        self.claim_ahead(now, lease, limit, &HashMap::new()).await
    }

    /// [`claim`](Self::claim), letting each endpoint in `ahead` have that many more messages claimed than its
    /// free slots (a worker queues them per endpoint; see `worker::pace`). The statement's contract has one
    /// quota for all endpoints, the cap minus what this process holds, so an allowance is passed as a held
    /// count lowered by it (below zero when nothing is held yet).
    pub(crate) async fn claim_ahead(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
        ahead: &HashMap<String, usize>,
    ) -> Result<Vec<Claimed>, StorageError> {
        let token: Arc<str> = id::lease_token().into();
        let limiter = &self.settings().limiter;
        let per_endpoint = i64::try_from(limiter.cap()).unwrap_or(i64::MAX);
        let (mut held_endpoints, mut held_counts) = limiter.held();
        if !ahead.is_empty() {
            // Indexed, not searched: a worker may hold and pace thousands of endpoints, once per claim.
            let index: HashMap<String, usize> = held_endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (e.clone(), i))
                .collect();
            for (endpoint, extra) in ahead {
                let extra = i64::try_from(*extra).unwrap_or(i64::MAX);
                match index.get(endpoint) {
                    Some(&i) => held_counts[i] = held_counts[i].saturating_sub(extra),
                    None => {
                        held_endpoints.push(endpoint.clone());
                        held_counts.push(-extra);
                    }
                }
            }
        }
        let params = [
            Value::from(&*token),
            Value::from(later(now, lease)),
            Value::from(now),
            Value::from(i64::from(limit)),
            Value::from(held_endpoints),
            Value::from(per_endpoint),
            Value::from(held_counts),
            Value::from(limiter.full_owners()),
        ];
        let rows = self.query(self.sql().claim_due, &params).await?;
        rows.iter()
            .map(|row| Claimed::from_row(row, &token, limiter, self.settings()))
            .collect()
    }

    /// Attempts one claimed message (waiting for a slot on its endpoint, owner and host first) and decides
    /// what follows. `base` and `started` place the attempt on the drain's clock: attempted_at = base + time
    /// since started.
    pub(crate) async fn attempt_claimed(
        &self,
        msg: &Claimed,
        base: DateTime<Utc>,
        started: Instant,
    ) -> Record {
        let slot = self.settings().limiter.acquire(&msg.route).await;
        self.attempt_in_slot(msg, slot, base, started).await
    }

    /// [`attempt_claimed`](Self::attempt_claimed) with its slots already taken (a worker takes them before it
    /// starts the task, so a task never waits for one).
    pub(crate) async fn attempt_in_slot(
        &self,
        msg: &Claimed,
        _slot: Slot,
        base: DateTime<Utc>,
        started: Instant,
    ) -> Record {
        let settings = self.settings();
        let attempted_at = later(base, started.elapsed());
        let attempted = match (&msg.keys, &msg.headers) {
            (Some(keys), Some(headers)) => {
                settings
                    .deliverer
                    .attempt(Outgoing {
                        url: &msg.url,
                        msg_id: &msg.id,
                        body: &msg.payload,
                        keys,
                        headers,
                        timestamp: settings.clock.now().timestamp(),
                    })
                    .await
            }
            (keys, _) => Attempted {
                result: AttemptResult::Refused(
                    if keys.is_none() {
                        "endpoint secret unusable"
                    } else {
                        "endpoint headers unusable"
                    }
                    .to_owned(),
                ),
                latency: Duration::ZERO,
            },
        };
        let (outcome, next_attempt_at) = match settings.retry.decide(msg.attempt_no, &attempted.result) {
            Decision::Delivered => (Outcome::Delivered, None),
            Decision::Dead => (Outcome::Dead, None),
            Decision::RetryAfter(delay) => (Outcome::Retrying, Some(later(attempted_at, delay))),
        };
        Record {
            id: msg.id.clone(),
            token: msg.token.clone(),
            outcome,
            attempt_no: msg.attempt_no,
            endpoint_id: msg.endpoint_id.clone(),
            attempted_at,
            status: attempted.result.status(),
            latency_ms: i64::try_from(attempted.latency.as_millis()).unwrap_or(i64::MAX),
            next_attempt_at,
            error: attempted.result.error_text(),
        }
    }

    /// Writes attempts in bulk; returns the ids actually recorded. A missing id means its lease was taken over
    /// by another drain, so this late result was discarded.
    pub(crate) async fn record(&self, records: &[Record]) -> Result<HashSet<String>, StorageError> {
        let mut recorded = HashSet::with_capacity(records.len());
        for chunk in records.chunks(usize::try_from(MAX_BATCH).unwrap_or(1000)) {
            let rows = self
                .query(self.sql().complete_attempts, &self.completion_params(chunk))
                .await?;
            for row in &rows {
                match (row.opt_text(0)?, row.opt_text(1)?) {
                    (Some(message_id), _) => {
                        recorded.insert(message_id);
                    }
                    (None, Some(endpoint_id)) => self.disabled_by_completion(&endpoint_id, row)?,
                    (None, None) => return Err(StorageError::decode("empty completion row")),
                }
            }
        }
        for r in records {
            if recorded.contains(&r.id) {
                self.observe_recorded(r);
            } else {
                tracing::warn!(message_id = %r.id, attempt_no = r.attempt_no, "lease lost before recording; result discarded");
            }
        }
        Ok(recorded)
    }

    fn completion_params(&self, chunk: &[Record]) -> [Value; 13] {
        let settings = self.settings();
        // An endpoint failing since before this instant, with a message gone dead since, is disabled. With the
        // rule off the cutoff is year 1, which no failure precedes: a time is always bound, never NULL,
        // because a driver that caches a statement with its first call's parameter types (sqlx) would read a
        // later timestamp after a NULL (sent as text) wrongly.
        let never = DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let failing_cutoff = settings
            .disable_failing_after
            .and_then(|after| chrono::Duration::from_std(after).ok())
            .and_then(|after| settings.clock.now().checked_sub_signed(after))
            .map_or(never, |cutoff| cutoff.max(never));
        [
            Value::from(chunk.iter().map(|r| r.id.clone()).collect::<Vec<String>>()),
            Value::from(chunk.iter().map(|r| r.token.to_string()).collect::<Vec<String>>()),
            Value::from(
                chunk
                    .iter()
                    .map(|r| r.outcome.as_str().to_owned())
                    .collect::<Vec<String>>(),
            ),
            Value::from(chunk.iter().map(|r| Some(r.attempted_at)).collect::<Vec<_>>()),
            Value::from(chunk.iter().map(|r| r.status.map(i32::from)).collect::<Vec<_>>()),
            Value::from(chunk.iter().map(|r| r.latency_ms).collect::<Vec<i64>>()),
            Value::from(chunk.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>()),
            Value::from(
                chunk
                    .iter()
                    .map(|r| r.error.clone())
                    .collect::<Vec<Option<String>>>(),
            ),
            Value::Bool(settings.on_gone == OnGone::Disable),
            Value::from(failing_cutoff),
            // Off is a threshold no run of failures reaches (the count is capped far below it).
            Value::from(
                settings
                    .hold_back
                    .map_or(i64::from(i32::MAX), |h| i64::from(h.after)),
            ),
            Value::from(settings.hold_back.map_or(0, |h| millis(h.first))),
            Value::from(settings.hold_back.map_or(0, |h| millis(h.longest))),
        ]
    }

    /// A completion row reporting an endpoint the statement disabled: (NULL, endpoint id, owner id, reason).
    fn disabled_by_completion(&self, endpoint_id: &str, row: &Row) -> Result<(), StorageError> {
        let owner_id = row.text(2)?;
        let reason = DisabledReason::from_column(row, 3)?
            .ok_or_else(|| StorageError::decode("disabled endpoint without a reason"))?;
        match reason {
            DisabledReason::Gone => {
                tracing::warn!(%endpoint_id, reason = "gone", "endpoint disabled: its receiver answered 410 Gone");
            }
            _ => {
                tracing::warn!(%endpoint_id, reason = reason.as_str(), "endpoint disabled: failing with no delivery for longer than the limit");
            }
        }
        self.settings()
            .observer
            .lifecycle(&LifecycleEvent::EndpointDisabled {
                endpoint_id,
                owner_id: &owner_id,
                reason,
            });
        Ok(())
    }

    fn observe_recorded(&self, r: &Record) {
        let observer = &self.settings().observer;
        observer.attempt(&AttemptEvent {
            message_id: &r.id,
            endpoint_id: &r.endpoint_id,
            attempt_no: r.attempt_no,
            status_code: r.status,
            outcome: r.outcome,
            latency: Duration::from_millis(u64::try_from(r.latency_ms).unwrap_or(0)),
        });
        if r.outcome == Outcome::Dead {
            observer.lifecycle(&LifecycleEvent::MessageDead {
                message_id: &r.id,
                endpoint_id: &r.endpoint_id,
                attempts: r.attempt_no,
            });
        }
        tracing::info!(
            message_id = %r.id,
            endpoint_id = %r.endpoint_id,
            attempt_no = r.attempt_no,
            status = r.status.map(i64::from),
            latency_ms = r.latency_ms,
            outcome = r.outcome.as_str(),
            error = r.error.as_deref(),
            "webhook attempt"
        );
    }

    /// Returns never-attempted claims to the queue at once (graceful shutdown).
    pub(crate) async fn release(&self, claims: &[(String, Arc<str>)]) -> Result<usize, StorageError> {
        if claims.is_empty() {
            return Ok(0);
        }
        let params = [
            Value::from(claims.iter().map(|(id, _)| id.clone()).collect::<Vec<String>>()),
            Value::from(claims.iter().map(|(_, t)| t.to_string()).collect::<Vec<String>>()),
        ];
        Ok(self.query(self.sql().release_claims, &params).await?.len())
    }
}
