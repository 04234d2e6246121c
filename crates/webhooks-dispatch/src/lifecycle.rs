//! An endpoint's life after registration: disabling and enabling it.
//!
//! A disabled endpoint takes nothing new (`endpoint_disabled`), events skip it (and record the skip), and
//! claims pass over its backlog at the cost of one lookup; its pending messages are neither attempted nor
//! burned, keep their attempt count, and are due at once when it is enabled again.

use crate::dispatcher::Dispatcher;
use crate::endpoint::{check_chars, DisabledReason, Endpoint};
use crate::error::DispatchError;
use crate::message::MAX_KEY_CHARS;
use crate::store::{Executor, Value};

impl<E: Executor> Dispatcher<E> {
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
