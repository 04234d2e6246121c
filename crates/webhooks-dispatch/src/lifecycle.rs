//! An endpoint's life after registration: listing, updating, disabling, enabling and deleting it.
//!
//! A disabled endpoint takes nothing new (`endpoint_disabled`), events skip it (and record the skip), and
//! claims pass over its backlog at the cost of one lookup; its pending messages are neither attempted nor
//! burned, keep their attempt count, and are due at once when it is enabled again.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dispatcher::Dispatcher;
use crate::endpoint::{
    check_chars, check_description, check_owner_id, normalize_event_types, stored_metadata, vet_url,
    DisabledReason, Endpoint, EndpointStatus, ENDPOINT_COLUMNS,
};
use crate::error::DispatchError;
use crate::headers::CustomHeaders;
use crate::message::MAX_KEY_CHARS;
use crate::observe::LifecycleEvent;
use crate::store::{Executor, Value};

/// Most items one page of a listing holds ([`Dispatcher::list_endpoints`],
/// [`Dispatcher::list_messages`]).
pub const MAX_LIST_LIMIT: u32 = 250;
/// Items per page of a listing when the filter does not say.
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

/// What [`Dispatcher::update_endpoint`] changes: every field left `None` stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateEndpoint {
    /// A new `https://` URL, checked like a registration's.
    pub url: Option<String>,
    /// New event types; an empty list means every type.
    pub event_types: Option<Vec<String>>,
    /// A new description.
    pub description: Option<String>,
    /// New metadata, replacing the old entirely.
    pub metadata: Option<BTreeMap<String, String>>,
    /// New custom headers, replacing the old entirely (an empty set removes them).
    pub headers: Option<CustomHeaders>,
}

/// What [`Dispatcher::delete_endpoint`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeletedEndpoint {
    /// The endpoint deleted.
    pub id: String,
    /// Its pending messages that ended (dead, reason `endpoint_deleted`).
    pub messages_ended: u64,
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
            check_owner_id(owner)?;
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
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let params = [
            Value::from(endpoint_id),
            Value::from(DisabledReason::Manual.as_str()),
            Value::from(self.settings().clock.now()),
        ];
        let (endpoint, changed) = self.endpoint_change(self.sql().disable_endpoint, &params).await?;
        if changed {
            self.settings()
                .observer
                .lifecycle(&LifecycleEvent::EndpointDisabled {
                    endpoint_id: &endpoint.id,
                    owner_id: &endpoint.owner_id,
                    reason: DisabledReason::Manual,
                });
        }
        Ok(endpoint)
    }

    /// Enables an endpoint again. Its waiting messages (including retries scheduled for later) become due at
    /// once, keeping their attempt counts; enabling an active endpoint changes nothing. Returns the endpoint
    /// as it now is.
    ///
    /// Errors: `invalid_input`, `unknown_endpoint`, `storage`.
    pub async fn enable_endpoint(&self, endpoint_id: &str) -> Result<Endpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let params = [Value::from(endpoint_id), Value::from(self.settings().clock.now())];
        let (endpoint, changed) = self.endpoint_change(self.sql().enable_endpoint, &params).await?;
        if changed {
            self.settings()
                .observer
                .lifecycle(&LifecycleEvent::EndpointEnabled {
                    endpoint_id: &endpoint.id,
                    owner_id: &endpoint.owner_id,
                });
            self.wake_workers().await;
        }
        Ok(endpoint)
    }

    /// Changes what is given in `update` and leaves the rest. A new URL passes every URL and destination
    /// check again (as at registration); messages already waiting go to it from their next attempt (one in
    /// flight finishes at the old one). New headers replace all the old ones. Returns the endpoint as it
    /// now is.
    ///
    /// A new URL is stored normalized, as at registration.
    ///
    /// Errors: `invalid_input`, `invalid_url`, `dns_timeout`, `unknown_endpoint` (also once deleted), `storage`.
    pub async fn update_endpoint(
        &self,
        endpoint_id: &str,
        update: UpdateEndpoint,
    ) -> Result<Endpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        // Always an array, with a flag saying whether it applies: a NULL (sent as text) in its place would
        // make a driver that caches statements with their first call's parameter types (sqlx) misread a
        // later array.
        let event_types = match &update.event_types {
            Some(types) => normalize_event_types(Some(types))?,
            None => Vec::new(),
        };
        let change_types = Value::Bool(update.event_types.is_some());
        if let Some(description) = &update.description {
            check_description(description)?;
        }
        let metadata = update.metadata.as_ref().map(stored_metadata).transpose()?;
        let headers = update
            .headers
            .as_ref()
            .map(CustomHeaders::to_stored)
            .transpose()?;
        let url = match &update.url {
            Some(url) => {
                let settings = self.settings();
                Some(vet_url(url, &settings.policy, settings.resolver.as_ref()).await?)
            }
            None => None,
        };
        let params = [
            Value::from(endpoint_id),
            Value::from(url),
            Value::from(event_types),
            change_types,
            Value::from(update.description),
            Value::from(metadata),
            Value::from(headers),
        ];
        let rows = self.query(self.sql().update_endpoint, &params).await?;
        let endpoint = Endpoint::from_row(rows.first().ok_or(DispatchError::UnknownEndpoint)?)?;
        self.settings()
            .observer
            .lifecycle(&LifecycleEvent::EndpointUpdated {
                endpoint_id: &endpoint.id,
                owner_id: &endpoint.owner_id,
            });
        Ok(endpoint)
    }

    /// Deletes an endpoint. From then on it behaves as unknown (reads, dispatches, events, listing), its
    /// pending messages end as dead with reason `endpoint_deleted` and are never attempted again, and its
    /// messages and attempts stay readable by their ids until retention removes them. An attempt in flight
    /// when it is deleted is discarded (its result is not recorded).
    ///
    /// Errors: `invalid_input`, `unknown_endpoint` (also when already deleted), `storage`.
    pub async fn delete_endpoint(&self, endpoint_id: &str) -> Result<DeletedEndpoint, DispatchError> {
        check_chars("endpoint_id", endpoint_id, MAX_KEY_CHARS, false)?;
        let params = [Value::from(endpoint_id), Value::from(self.settings().clock.now())];
        let rows = self.query(self.sql().delete_endpoint, &params).await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        let deleted = DeletedEndpoint {
            id: row.text(0)?,
            messages_ended: u64::try_from(row.int(2)?).unwrap_or(0),
        };
        self.settings()
            .observer
            .lifecycle(&LifecycleEvent::EndpointDeleted {
                endpoint_id: &deleted.id,
                owner_id: &row.text(1)?,
            });
        Ok(deleted)
    }

    /// Runs a statement that returns an endpoint and whether the statement changed its status.
    async fn endpoint_change(
        &self,
        sql: &'static str,
        params: &[Value],
    ) -> Result<(Endpoint, bool), DispatchError> {
        let rows = self.query(sql, params).await?;
        let row = rows.first().ok_or(DispatchError::UnknownEndpoint)?;
        let changed = row.opt_bool(ENDPOINT_COLUMNS)?.unwrap_or(false);
        Ok((Endpoint::from_row(row)?, changed))
    }
}
