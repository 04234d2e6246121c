//! Payload shapes, event types, idempotency keys, the loop guard and dropping when full.

use chrono::TimeZone;

use super::*;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(6)
}

fn owned(event: LifecycleEvent<'_>) -> OperationalEvent {
    OperationalEvent::from_lifecycle(&event, at()).expect("forwarded")
}

#[test]
fn endpoint_disabled_payload_is_svix_like_with_its_reason() {
    let event = owned(LifecycleEvent::EndpointDisabled {
        endpoint_id: "ep_1",
        owner_id: "acme",
        reason: DisabledReason::Gone,
    });
    assert_eq!(event.event_type(), "endpoint.disabled");
    assert_eq!(
        event.payload(None),
        json!({
            "type": "endpoint.disabled",
            "timestamp": "2026-01-02T03:04:05.000006Z",
            "data": {"endpoint_id": "ep_1", "owner_id": "acme", "reason": "gone"},
        })
    );
    assert_eq!(
        event.idempotency_key(),
        "endpoint.disabled:ep_1:2026-01-02T03:04:05.000006Z"
    );
}

#[test]
fn message_exhausted_payload_has_the_owner_only_when_found() {
    let event = owned(LifecycleEvent::MessageDead {
        message_id: "msg_1",
        endpoint_id: "ep_1",
        attempts: 3,
    });
    assert_eq!(event.event_type(), "message.attempt.exhausted");
    assert_eq!(event.owner_id(), None);
    assert_eq!(
        event.payload(Some("acme")),
        json!({
            "type": "message.attempt.exhausted",
            "timestamp": "2026-01-02T03:04:05.000006Z",
            "data": {"message_id": "msg_1", "endpoint_id": "ep_1", "owner_id": "acme", "attempts": 3},
        })
    );
    assert_eq!(
        event.payload(None)["data"],
        json!({"message_id": "msg_1", "endpoint_id": "ep_1", "attempts": 3})
    );
    assert_eq!(event.idempotency_key(), "message.attempt.exhausted:msg_1");
}

#[test]
fn every_endpoint_event_has_its_type_and_no_reason_field() {
    let (e, o) = ("ep_1", "acme");
    let cases = [
        (
            LifecycleEvent::EndpointCreated {
                endpoint_id: e,
                owner_id: o,
            },
            "endpoint.created",
        ),
        (
            LifecycleEvent::EndpointUpdated {
                endpoint_id: e,
                owner_id: o,
            },
            "endpoint.updated",
        ),
        (
            LifecycleEvent::EndpointEnabled {
                endpoint_id: e,
                owner_id: o,
            },
            "endpoint.enabled",
        ),
        (
            LifecycleEvent::EndpointDeleted {
                endpoint_id: e,
                owner_id: o,
            },
            "endpoint.deleted",
        ),
    ];
    for (event, event_type) in cases {
        let event = owned(event);
        assert_eq!(event.event_type(), event_type);
        assert_eq!(event.owner_id(), Some("acme"));
        let payload = event.payload(None);
        assert_eq!(payload["type"], event_type);
        assert_eq!(
            payload["data"],
            json!({"endpoint_id": "ep_1", "owner_id": "acme"})
        );
    }
}

#[test]
fn the_forwarder_skips_the_operational_owner_and_drops_when_full_without_blocking() {
    let dropped = Counter::default();
    let (forwarder, mut inbox) = channel("ops", dropped.clone());
    forwarder.lifecycle(&LifecycleEvent::EndpointDisabled {
        endpoint_id: "ep_ops",
        owner_id: "ops",
        reason: DisabledReason::Failing,
    });
    assert!(
        inbox.events.try_recv().is_err(),
        "nothing about the operator's own endpoints"
    );

    let customer = LifecycleEvent::EndpointCreated {
        endpoint_id: "ep_1",
        owner_id: "acme",
    };
    for _ in 0..QUEUE_CAPACITY + 2 {
        forwarder.lifecycle(&customer);
    }
    assert_eq!(dropped.get(), 2);
    let first = inbox.events.try_recv().expect("queued");
    assert_eq!(first.owner_id(), Some("acme"));

    drop(inbox);
    forwarder.lifecycle(&customer);
    assert_eq!(dropped.get(), 3, "a stopped task counts as a drop too");
}
