//! Operational webhooks: the library's lifecycle events (an endpoint created, updated, disabled, enabled or
//! deleted; a message whose attempts ran out) sent as ordinary webhooks to one configured owner
//! (`operational_owner`), so operators subscribe to them by registering endpoints for that owner — with the
//! same outbox, signing, retries and SSRF rules as any customer.
//!
//! The library calls its [`Observer`] synchronously on the delivery and API paths, so [`Forwarder`] only
//! copies the event and `try_send`s it on a bounded channel; when the channel is full the event is counted
//! and dropped rather than slowing a delivery down. A task ([`Inbox::spawn`]) turns each event into
//! `Dispatcher::dispatch_event`. The observer is built before the dispatcher and the task needs the
//! dispatcher, so the two halves are made together by [`channel`] and the task is spawned once the
//! dispatcher exists.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::metrics::counter::Counter;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use webhooks_dispatch::{AttemptEvent, DisabledReason, DispatchError, LifecycleEvent, NewEvent, Observer};

use crate::server::ServiceDispatcher;

/// Events waiting for the forwarding task. Lifecycle changes are rare next to deliveries, so a full queue
/// means the database is stuck, and dropping then is better than holding deliveries up.
pub const QUEUE_CAPACITY: usize = 1024;

/// Dispatch attempts per event when the database fails; the idempotency key makes a retry that follows
/// an unseen success harmless.
const DISPATCH_TRIES: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A lifecycle event, owned, stamped with the time it was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationalEvent {
    /// What happened.
    pub kind: EventKind,
    /// When it was observed (the payload's `timestamp`).
    pub at: DateTime<Utc>,
}

/// The owned form of a [`LifecycleEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An endpoint event: `endpoint.created`, `.updated`, `.disabled` (with a reason), `.enabled`, `.deleted`.
    Endpoint {
        /// The operational event type.
        event_type: &'static str,
        /// The endpoint.
        endpoint_id: String,
        /// Its owner.
        owner_id: String,
        /// For `endpoint.disabled`, why.
        reason: Option<DisabledReason>,
    },
    /// `message.attempt.exhausted`: a message went dead.
    MessageDead {
        /// The message.
        message_id: String,
        /// Its endpoint.
        endpoint_id: String,
        /// Attempts made.
        attempts: u32,
    },
}

impl OperationalEvent {
    /// The owned copy of `event`, or `None` for a kind of event this service does not forward.
    pub fn from_lifecycle(event: &LifecycleEvent<'_>, at: DateTime<Utc>) -> Option<Self> {
        let endpoint = |event_type, endpoint_id: &str, owner_id: &str, reason| EventKind::Endpoint {
            event_type,
            endpoint_id: endpoint_id.to_owned(),
            owner_id: owner_id.to_owned(),
            reason,
        };
        let kind = match *event {
            LifecycleEvent::EndpointCreated {
                endpoint_id,
                owner_id,
            } => endpoint("endpoint.created", endpoint_id, owner_id, None),
            LifecycleEvent::EndpointUpdated {
                endpoint_id,
                owner_id,
            } => endpoint("endpoint.updated", endpoint_id, owner_id, None),
            LifecycleEvent::EndpointDisabled {
                endpoint_id,
                owner_id,
                reason,
            } => endpoint("endpoint.disabled", endpoint_id, owner_id, Some(reason)),
            LifecycleEvent::EndpointEnabled {
                endpoint_id,
                owner_id,
            } => endpoint("endpoint.enabled", endpoint_id, owner_id, None),
            LifecycleEvent::EndpointDeleted {
                endpoint_id,
                owner_id,
            } => endpoint("endpoint.deleted", endpoint_id, owner_id, None),
            LifecycleEvent::MessageDead {
                message_id,
                endpoint_id,
                attempts,
            } => EventKind::MessageDead {
                message_id: message_id.to_owned(),
                endpoint_id: endpoint_id.to_owned(),
                attempts,
            },
            // The enum is non-exhaustive: a kind added to the library is ignored until it gets a type here.
            _ => return None,
        };
        Some(OperationalEvent { kind, at })
    }

    /// The webhook's event type.
    pub fn event_type(&self) -> &'static str {
        match &self.kind {
            EventKind::Endpoint { event_type, .. } => event_type,
            EventKind::MessageDead { .. } => "message.attempt.exhausted",
        }
    }

    /// The owner the event is about, when the event itself says (a dead message names only its endpoint).
    pub fn owner_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Endpoint { owner_id, .. } => Some(owner_id),
            EventKind::MessageDead { .. } => None,
        }
    }

    /// Identifies this event among everything sent to the operational owner: a message dies once; an
    /// endpoint can change the same way again, so its events also carry their observation time.
    pub fn idempotency_key(&self) -> String {
        match &self.kind {
            EventKind::Endpoint { endpoint_id, .. } => {
                format!("{}:{endpoint_id}:{}", self.event_type(), self.timestamp())
            }
            EventKind::MessageDead { message_id, .. } => format!("{}:{message_id}", self.event_type()),
        }
    }

    /// The webhook body, Svix-like: `{"type", "timestamp", "data"}`. `owner_id` is the dead message's
    /// endpoint's owner, when it was found (endpoint events carry their own).
    pub fn payload(&self, owner_id: Option<&str>) -> Value {
        let data = match &self.kind {
            EventKind::Endpoint {
                endpoint_id,
                owner_id,
                reason,
                ..
            } => {
                let mut data = json!({"endpoint_id": endpoint_id, "owner_id": owner_id});
                if let Some(reason) = reason {
                    data["reason"] = json!(reason.as_str());
                }
                data
            }
            EventKind::MessageDead {
                message_id,
                endpoint_id,
                attempts,
            } => {
                let mut data =
                    json!({"message_id": message_id, "endpoint_id": endpoint_id, "attempts": attempts});
                if let Some(owner_id) = owner_id {
                    data["owner_id"] = json!(owner_id);
                }
                data
            }
        };
        json!({"type": self.event_type(), "timestamp": self.timestamp(), "data": data})
    }

    fn timestamp(&self) -> String {
        self.at.to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

/// The [`Observer`] half: copies lifecycle events onto the channel, never waiting.
pub struct Forwarder {
    owner: Arc<str>,
    events: mpsc::Sender<OperationalEvent>,
    dropped: Counter,
}

impl Observer for Forwarder {
    fn lifecycle(&self, event: &LifecycleEvent<'_>) {
        let Some(event) = OperationalEvent::from_lifecycle(event, Utc::now()) else {
            return;
        };
        // Loop guard: an operator endpoint that keeps failing must not report on itself forever. Dead
        // messages name no owner; the task checks those once it has read the endpoint.
        if event.owner_id() == Some(&*self.owner) {
            return;
        }
        if let Err(e) = self.events.try_send(event) {
            let closed = matches!(e, mpsc::error::TrySendError::Closed(_));
            let total = self.dropped.inc() + 1;
            // Logarithmically, so a stuck database does not also flood the log.
            if total.is_power_of_two() {
                tracing::warn!(
                    dropped_total = total,
                    closed,
                    "operational event dropped: the forwarding queue is full or stopped"
                );
            }
        }
    }
}

/// The receiving half, waiting for the dispatcher to exist.
pub struct Inbox {
    owner: Arc<str>,
    events: mpsc::Receiver<OperationalEvent>,
}

/// The two halves for operational events to `owner`; drops are counted on `dropped`.
pub fn channel(owner: &str, dropped: Counter) -> (Forwarder, Inbox) {
    let owner: Arc<str> = Arc::from(owner);
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let forwarder = Forwarder {
        owner: owner.clone(),
        events: tx,
        dropped,
    };
    (forwarder, Inbox { owner, events: rx })
}

impl Inbox {
    /// Starts the task that dispatches each event through `dispatcher` (whose observer holds the
    /// [`Forwarder`], so the channel never closes by itself: stop it with [`Running::shutdown`]).
    pub fn spawn(self, dispatcher: ServiceDispatcher) -> Running {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(forward(self, dispatcher, stopped));
        Running { stop, task }
    }
}

/// The running forwarding task. Dropping it also stops the task, after the events already queued.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops the task once it has dispatched what is queued (the last deliveries' events still reach the
    /// outbox), giving up after `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "operational events task failed"),
            Err(_) => {
                task.abort();
                tracing::warn!(
                    ?grace,
                    "operational events still queued at shutdown were not dispatched"
                );
            }
        }
    }
}

async fn forward(mut inbox: Inbox, dispatcher: ServiceDispatcher, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            biased;
            // A dropped `Running` (the service's future was cancelled) ends the task too.
            _ = &mut stopped => break,
            event = inbox.events.recv() => match event {
                Some(event) => deliver(&dispatcher, &inbox.owner, event).await,
                None => return,
            },
        }
    }
    while let Ok(event) = inbox.events.try_recv() {
        deliver(&dispatcher, &inbox.owner, event).await;
    }
}

/// Dispatches one event, retrying storage failures; any failure is logged, never raised.
async fn deliver(dispatcher: &ServiceDispatcher, owner: &str, event: OperationalEvent) {
    let mut tries = 0;
    loop {
        tries += 1;
        match dispatch(dispatcher, owner, &event).await {
            Ok(()) => return,
            Err(e @ DispatchError::Storage(_)) if tries < DISPATCH_TRIES => {
                tracing::debug!(error = %e, event_type = event.event_type(), "operational event: retrying");
                tokio::time::sleep(RETRY_PAUSE * tries).await;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    code = e.code(),
                    event_type = event.event_type(),
                    idempotency_key = %event.idempotency_key(),
                    "operational event not dispatched"
                );
                return;
            }
        }
    }
}

async fn dispatch(
    dispatcher: &ServiceDispatcher,
    owner: &str,
    event: &OperationalEvent,
) -> Result<(), DispatchError> {
    let about = match &event.kind {
        EventKind::Endpoint { owner_id, .. } => Some(owner_id.clone()),
        EventKind::MessageDead { endpoint_id, .. } => match dispatcher.endpoint(endpoint_id).await {
            Ok(endpoint) => Some(endpoint.owner_id),
            Err(DispatchError::UnknownEndpoint) => None,
            Err(e) => return Err(e),
        },
    };
    if about.as_deref() == Some(owner) {
        return Ok(());
    }
    let input = NewEvent::new(owner, event.event_type(), event.payload(about.as_deref()))
        .idempotency_key(event.idempotency_key());
    match dispatcher.dispatch_event(input).await {
        Ok(sent) => {
            tracing::debug!(
                event_id = %sent.event_id,
                event_type = event.event_type(),
                messages = sent.messages.len(),
                "operational event dispatched"
            );
            Ok(())
        }
        // The key is held with another payload only when the same dead message was reported already (by
        // another process, at another timestamp): one report is enough.
        Err(DispatchError::IdempotencyConflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fans every event out to several observers, in order (the service's metrics and its forwarder).
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn dispatched(&self, created: usize) {
        for o in &self.0 {
            o.dispatched(created);
        }
    }

    fn attempt(&self, event: &AttemptEvent<'_>) {
        for o in &self.0 {
            o.attempt(event);
        }
    }

    fn lifecycle(&self, event: &LifecycleEvent<'_>) {
        for o in &self.0 {
            o.lifecycle(event);
        }
    }
}

#[cfg(test)]
mod tests;
