//! What was sent: listing messages, newest first, by endpoint, event, state and time.
//!
//! History outlives the endpoint's state: messages of disabled endpoints stay listable. Each leading filter
//! has its own statement so each is one index range (the endpoint's, the event's, or the primary key);
//! the other filters are checked on the rows that range walks.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::dispatcher::Dispatcher;
use crate::endpoint::check_chars;
use crate::error::DispatchError;
use crate::lifecycle::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use crate::message::{Message, MessageState, MAX_KEY_CHARS};
use crate::store::{Executor, Value};

/// Which messages [`Dispatcher::list_messages`] returns, and from where. Filters combine: a message is
/// listed when it matches every one given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListMessages {
    /// Only messages to this endpoint (`ep_…`).
    pub endpoint_id: Option<String>,
    /// Only the messages this event fanned out (`evt_…`).
    pub event_id: Option<String>,
    /// Only messages in this state.
    pub status: Option<MessageState>,
    /// Only messages dispatched at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only messages dispatched before this instant (exclusive, so consecutive windows never overlap).
    pub until: Option<DateTime<Utc>>,
    /// At most this many, 1..=250 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; none for the first.
    pub cursor: Option<String>,
}

/// One page of messages, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MessagePage {
    /// The messages.
    pub data: Vec<Message>,
    /// Pass as `cursor` for the next (older) page; none when this page is the last.
    pub next_cursor: Option<String>,
}

impl<E: Executor> Dispatcher<E> {
    /// Lists messages, newest first, one page at a time (keyset pagination on the id, which is time-ordered:
    /// a later page never repeats or skips a message, whatever is dispatched meanwhile; new messages appear
    /// on a fresh first page).
    ///
    /// Errors: `invalid_input` (a limit outside 1..=250, a blank or too long endpoint, event or cursor,
    /// `since` not before `until`), `storage`.
    pub async fn list_messages(&self, filter: ListMessages) -> Result<MessagePage, DispatchError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(DispatchError::input("limit", "must be between 1 and 250"));
        }
        for (field, value) in [
            ("endpoint_id", &filter.endpoint_id),
            ("event_id", &filter.event_id),
            ("cursor", &filter.cursor),
        ] {
            if let Some(value) = value {
                check_chars(field, value, MAX_KEY_CHARS, false)?;
            }
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until) {
            if since >= until {
                return Err(DispatchError::input("since", "must be before until"));
            }
        }
        let (earliest, latest) = time_bounds();
        let since = filter.since.map_or(earliest, |t| t.max(earliest));
        let until = filter.until.map_or(latest, |t| t.min(latest));
        // The filters every statement shares, in their parameter order after the leading ones; one more row
        // than asked tells whether there is a next page without a second query.
        let shared = [
            Value::from(filter.status.map(|s| s.as_str().to_owned())),
            Value::from(since),
            Value::from(until),
            Value::from(filter.cursor),
            Value::I64(i64::from(limit) + 1),
        ];
        let (sql, mut params) = match (filter.event_id, filter.endpoint_id) {
            // The event's index is the narrower one: an event has at most one message per endpoint.
            (Some(event), endpoint) => (
                self.sql().list_event_messages,
                vec![Value::from(event), Value::from(endpoint)],
            ),
            (None, Some(endpoint)) => (self.sql().list_endpoint_messages, vec![Value::from(endpoint)]),
            (None, None) => (self.sql().list_messages, Vec::new()),
        };
        params.extend(shared);
        let rows = self.query(sql, &params).await?;
        let mut data = rows
            .iter()
            .map(Message::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = data.len() > limit as usize;
        data.truncate(limit as usize);
        let next_cursor = more.then(|| data.last().map(|m| m.id.clone())).flatten();
        Ok(MessagePage { data, next_cursor })
    }
}

/// The window an absent `since` or `until` stands for: years 1 to 9999, inside what both engines store.
///
/// A time is always bound, never NULL: adapters send NULL typed as text (the statements cast it), and a
/// driver that caches a statement with the types of its first call (sqlx) would then read a later real
/// timestamp's binary form as text. Times outside the window are clamped to it, so an extreme chrono value
/// cannot fail as out of range in the database.
fn time_bounds() -> (DateTime<Utc>, DateTime<Utc>) {
    const YEAR_1: i64 = -62_135_596_800;
    const YEAR_10000: i64 = 253_402_300_800;
    let at = |secs| DateTime::from_timestamp(secs, 0).expect("within chrono's range");
    (at(YEAR_1), at(YEAR_10000))
}
