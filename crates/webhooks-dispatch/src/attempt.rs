//! The delivery log: one record per attempt.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What an attempt led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// Transient failure; another attempt is scheduled.
    Retrying,
    /// Permanent failure or attempts exhausted; the message is dead-lettered.
    Dead,
}

impl Outcome {
    /// The stored text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying => "retrying",
            Outcome::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "delivered" => Some(Outcome::Delivered),
            "retrying" => Some(Outcome::Retrying),
            "dead" => Some(Outcome::Dead),
            _ => None,
        }
    }
}

/// One recorded delivery attempt. Contains no secret and no response body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The message attempted.
    pub message_id: String,
    /// 1-based, unique per message.
    pub attempt_no: u32,
    /// When the attempt started.
    pub attempted_at: DateTime<Utc>,
    /// HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// What the attempt led to.
    pub outcome: Outcome,
    /// Time from attempt start to response head or failure.
    pub latency_ms: u64,
    /// When the next attempt is due, if `outcome` is `Retrying`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Generic failure description (no driver or response text).
    pub error: Option<String>,
}
