//! Identifier generation.
//!
//! Ids are a type prefix plus a ULID: unique without coordination between processes, and time-ordered so
//! recent rows cluster in the primary-key index. Message ids are also monotonic within this process, so
//! messages enqueued in the same millisecond (and so due at the same instant) are delivered in dispatch order:
//! claims break ties by id.

use std::sync::{Mutex, PoisonError};

use ulid::{Generator, Ulid};

static MONOTONIC: Mutex<Generator> = Mutex::new(Generator::new());

fn monotonic() -> Ulid {
    let next = MONOTONIC
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .generate();
    // Overflow needs 2^80 ids in one millisecond; should it happen, a plain ULID is still unique.
    next.unwrap_or_else(|_| Ulid::new())
}

/// Endpoint ids share it too, so listing endpoints in id order is registration order (exactly within one
/// process, to the millisecond between processes).
pub(crate) fn endpoint_id() -> String {
    format!("ep_{}", monotonic())
}

/// Key ids order by creation too, which is how an endpoint's keys are ranked newest first.
pub(crate) fn key_id() -> String {
    format!("key_{}", monotonic())
}

pub(crate) fn message_id() -> String {
    format!("msg_{}", monotonic())
}

/// Event ids share the messages' monotonic generator, so events and direct messages enqueued in the same
/// millisecond keep their order. An event's messages are `msg_<event ULID>_<endpoint ULID>` (made by the
/// fan-out statement, which alone knows the endpoints): unique per event and endpoint, stable, and ordered
/// with the event.
pub(crate) fn event_id() -> String {
    format!("evt_{}", monotonic())
}

/// Identifies one drain's claim, so a drain whose lease expired cannot record over a newer claim.
pub(crate) fn lease_token() -> String {
    Ulid::new().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_have_prefixes_and_are_unique() {
        let a = super::message_id();
        let b = super::message_id();
        assert!(a.starts_with("msg_") && super::endpoint_id().starts_with("ep_"));
        assert_ne!(a, b);
    }

    #[test]
    fn message_ids_increase_within_a_millisecond() {
        let ids: Vec<String> = (0..1000).map(|_| super::message_id()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "message ids are not monotonic"
        );
    }
}
