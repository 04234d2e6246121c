//! `deliver_due`: claim due messages, attempt them concurrently, record every outcome.
//!
//! A drain stamps the rows it claims with a lease token and expiry. Other drains skip leased rows, so a message
//! is never attempted by two drains at once; if a drain dies, its rows become due again when the lease
//! expires; and a drain whose lease was taken over cannot record its late result (the token no longer
//! matches). Delivery is therefore at-least-once, and exactly-once whenever drains finish within their lease.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::attempt::Outcome;
use crate::delivery::Outgoing;
use crate::dispatcher::Dispatcher;
use crate::error::{DispatchError, StorageError};
use crate::id;
use crate::retry::Decision;
use crate::signing::EndpointSecret;
use crate::store::{postgres as sql, Executor, Row, Value};

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

struct Claimed {
    id: String,
    endpoint_id: String,
    payload: String,
    attempt_no: i64,
    url: String,
    secret: Option<EndpointSecret>,
}

impl Claimed {
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(Claimed {
            id: row.text(0)?,
            endpoint_id: row.text(1)?,
            payload: row.text(2)?,
            attempt_no: row.int(3)? + 1,
            url: row.text(4)?,
            secret: EndpointSecret::parse(&row.text(5)?).ok(),
        })
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl<E: Executor> Dispatcher<E> {
    /// Attempts every due message (up to `batch`), records each attempt, and schedules retries or
    /// dead-letters. Safe to call from many tasks and processes at once.
    pub async fn deliver_due(&self, opts: DeliverDue) -> Result<DeliveryReport, DispatchError> {
        let batch = opts.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            return Err(DispatchError::input("batch", "must be between 1 and 1000"));
        }
        let settings = self.settings();
        let now = opts.now.unwrap_or_else(|| settings.clock.now());
        // The lease must outlast the whole drain, not one attempt: with `concurrency` attempts in flight, the
        // last of `batch` messages starts after ceil(batch / concurrency) attempt deadlines at worst.
        let waves = u32::try_from(
            usize::try_from(batch)
                .unwrap_or(usize::MAX)
                .div_ceil(settings.concurrency),
        )
        .unwrap_or(u32::MAX);
        let lease = settings.attempt_timeout.saturating_mul(waves) + LEASE_MARGIN;
        let token = id::lease_token();
        let claim = [
            Value::from(token.as_str()),
            Value::from(now + chrono_duration(lease)),
            Value::from(now),
            Value::from(i64::from(batch)),
        ];
        let rows = self.query(sql::CLAIM_DUE, &claim).await?;
        let claimed = rows
            .iter()
            .map(Claimed::from_row)
            .collect::<Result<Vec<_>, _>>()?;

        let started = Instant::now();
        let outcomes: Vec<Result<Option<Outcome>, StorageError>> = stream::iter(claimed)
            .map(|msg| self.attempt_one(msg, &token, now, started))
            .buffer_unordered(settings.concurrency)
            .collect()
            .await;

        let mut report = DeliveryReport::default();
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok(Some(o)) => {
                    report.attempted += 1;
                    match o {
                        Outcome::Delivered => report.delivered += 1,
                        Outcome::Retrying => report.retried += 1,
                        Outcome::Dead => report.dead += 1,
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            // Unrecorded messages keep their lease and are retried after it expires: nothing is lost.
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    /// Attempts one claimed message and records the result. `Ok(None)`: the lease was lost to another drain,
    /// so this result was discarded.
    async fn attempt_one(
        &self,
        msg: Claimed,
        token: &str,
        now: DateTime<Utc>,
        drain_started: Instant,
    ) -> Result<Option<Outcome>, StorageError> {
        let settings = self.settings();
        let attempted_at = now + chrono_duration(drain_started.elapsed());
        let attempt_no = u32::try_from(msg.attempt_no).unwrap_or(u32::MAX);
        let attempted = match &msg.secret {
            Some(secret) => {
                settings
                    .deliverer
                    .attempt(Outgoing {
                        url: &msg.url,
                        msg_id: &msg.id,
                        body: &msg.payload,
                        secret,
                        timestamp: settings.clock.now().timestamp(),
                    })
                    .await
            }
            None => crate::delivery::Attempted {
                result: crate::retry::AttemptResult::Refused("endpoint secret unusable".to_owned()),
                latency: Duration::ZERO,
            },
        };
        let (outcome, next_attempt_at) = match settings.retry.decide(attempt_no, &attempted.result) {
            Decision::Delivered => (Outcome::Delivered, None),
            Decision::Dead => (Outcome::Dead, None),
            Decision::RetryAfter(delay) => (Outcome::Retrying, Some(attempted_at + chrono_duration(delay))),
        };
        let status = attempted.result.status();
        let latency_ms = i64::try_from(attempted.latency.as_millis()).unwrap_or(i64::MAX);
        let params = [
            Value::from(msg.id.as_str()),
            Value::from(token),
            Value::from(outcome.as_str()),
            Value::from(attempted_at),
            Value::from(status.map(i32::from)),
            Value::from(latency_ms),
            Value::from(next_attempt_at),
            Value::from(attempted.result.error_text()),
        ];
        let recorded = self.query(sql::COMPLETE_ATTEMPT, &params).await?;
        if recorded.is_empty() {
            tracing::warn!(message_id = %msg.id, attempt_no, "lease lost before recording; result discarded");
            return Ok(None);
        }
        tracing::info!(
            message_id = %msg.id,
            endpoint_id = %msg.endpoint_id,
            attempt_no,
            status = status.map(i64::from),
            latency_ms,
            outcome = outcome.as_str(),
            "webhook attempt"
        );
        Ok(Some(outcome))
    }
}
