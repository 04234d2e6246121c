//! An endpoint's life after registration: listing, disabling and enabling it.
//!
//! A disabled endpoint takes nothing new (`endpoint_disabled`), events skip it (and record the skip), and
//! claims pass over its backlog at the cost of one lookup; its pending messages are neither attempted nor
//! burned, keep their attempt count, and are due at once when it is enabled again.

use serde::Serialize;

use crate::dispatcher::Dispatcher;
use crate::endpoint::{check_chars, DisabledReason, Endpoint, EndpointStatus, MAX_OWNER_ID_CHARS};
use crate::error::DispatchError;
use crate::message::MAX_KEY_CHARS;
use crate::store::{Executor, Value};

/// Most endpoints one [`Dispatcher::list_endpoints`] page holds.
pub const MAX_LIST_LIMIT: u32 = 250;
/// Endpoints per page when the filter does not say.
pub const DEFAULT_LIST_LIMIT: u32 = 50;

/// Which endpoints [`Dispatcher::list_endpoints`] returns, and from where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListEndpoints {
    /// Only this owner's.
    pub owner_id: Option<String>,
    /// Only endpoints with this status.
    pub status: Option<EndpointStatus>,
    /// At most this many, 1..=250 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page; none for the first.
    pub cursor: Option<String>,
}

/// One page of endpoints, in id order: registration order (exactly within one process, to the millisecond
/// between processes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointPage {
    /// The endpoints.
    pub data: Vec<Endpoint>,
    /// Pass as `cursor` for the next page; none when this page is the last.
    pub next_cursor: Option<String>,
}

impl<E: Executor> Dispatcher<E> {
    /// Lists endpoints, oldest first, one page at a time (keyset pagination on the id: a page never repeats
    /// or skips an endpoint, whatever is registered meanwhile; new ones appear on later pages).
    ///
    /// Errors: `invalid_input` (a limit outside 1..=250, a blank or too long owner or cursor), `storage`.
    pub async fn list_endpoints(&self, filter: ListEndpoints) -> Result<EndpointPage, DispatchError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(DispatchError::input("limit", "must be between 1 and 250"));
        }
        if let Some(owner) = &filter.owner_id {
            check_chars("owner_id", owner, MAX_OWNER_ID_CHARS, false)?;
        }
        let after = filter.cursor.unwrap_or_default();
        if !after.is_empty() {
            check_chars("cursor", &after, MAX_KEY_CHARS, false)?;
        }
        let status = Value::from(filter.status.map(|s| s.as_str().to_owned()));
        // One more than asked: whether there is a next page, without a second query.
        let fetch = Value::I64(i64::from(limit) + 1);
        let rows = match filter.owner_id {
            Some(owner) => {
                let params = [Value::from(owner), status, Value::from(after), fetch];
                self.query(self.sql().list_owner_endpoints, &params).await?
            }
            None => {
                let params = [status, Value::from(after), fetch];
                self.query(self.sql().list_endpoints, &params).await?
            }
        };
        let mut data = rows
            .iter()
            .map(Endpoint::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = data.len() > limit as usize;
        data.truncate(limit as usize);
        let next_cursor = more.then(|| data.last().map(|e| e.id.clone())).flatten();
        Ok(EndpointPage { data, next_cursor })
    }

    /// Disables an endpoint by hand (reason `manual`). Disabling one that is already disabled keeps the
    /// reason and time it was first disabled with. Returns the endpoint as it now is.
    ///
    /// Errors: `invalid_input`, `unknown_endpoint`, `storage`.
    pub async fn disable_endpoint(&self, endpoint_id: &str) -> Result<Endpoint, DispatchError> {
        self.disable_endpoint_for(endpoint_id, DisabledReason::Manual)
            .await
    }

    pub(crate) async fn disable_endpoint_for(
        &self,
        endpoint_id: &str,
        reason: DisabledReason,
    ) -> Result<Endpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let params = [
            Value::from(endpoint_id),
            Value::from(reason.as_str()),
            Value::from(self.settings().clock.now()),
        ];
        let rows = self.query(self.sql().disable_endpoint, &params).await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        Ok(Endpoint::from_row(row)?)
    }

    /// Enables an endpoint again. Its waiting messages (including retries scheduled for later) become due at
    /// once, keeping their attempt counts; enabling an active endpoint changes nothing. Returns the endpoint
    /// as it now is.
    ///
    /// Errors: `invalid_input`, `unknown_endpoint`, `storage`.
    pub async fn enable_endpoint(&self, endpoint_id: &str) -> Result<Endpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let params = [Value::from(endpoint_id), Value::from(self.settings().clock.now())];
        let rows = self.query(self.sql().enable_endpoint, &params).await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        let endpoint = Endpoint::from_row(row)?;
        self.wake_workers().await;
        Ok(endpoint)
    }
}
