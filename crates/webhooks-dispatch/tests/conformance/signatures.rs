use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use webhooks_dispatch::signing::{verify_at, EndpointSecret};
use webhooks_dispatch::{verify, DeliverDue, NewMessage, RetryPolicy};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::conformance;
use crate::support::{Ctx, Engine, ManualClock};

conformance!(
    invariant3_delivery_verifies_with_independent_standard_webhooks_implementation,
    invariant3_every_attempt_gets_a_fresh_timestamp_and_signature,
);

fn tampered_headers(headers: &HeaderMap, name: &str, value: &str) -> HeaderMap {
    let mut h = headers.clone();
    h.insert(
        name.parse::<http::HeaderName>().unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    h
}

async fn invariant3_delivery_verifies_with_independent_standard_webhooks_implementation(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (ep, secret) = ctx.endpoint(&d).await;
    // Key order and unicode are kept: the signed bytes are exactly the serialized payload.
    let payload = serde_json::json!({"z": 1, "a": [true, null], "text": "héllo \"world\""});
    let sent = d
        .dispatch(NewMessage::new(&ep, "invoice.paid", &payload))
        .await
        .unwrap();
    let report = d.deliver_due(DeliverDue::default()).await.unwrap();
    assert_eq!(report.delivered, 1);

    let got = ctx.receiver.received().pop().expect("one delivery");
    assert_eq!(&got.body[..], serde_json::to_string(&payload).unwrap().as_bytes());
    assert_eq!(got.headers["webhook-id"], sent.message_id.as_str());
    assert_eq!(got.headers["content-type"], "application/json");
    let signature = got.headers["webhook-signature"].to_str().unwrap();
    assert!(signature.starts_with("v1,"), "{signature}");

    // An independent implementation (the standardwebhooks crate) accepts it ...
    let independent = standardwebhooks::Webhook::new(&secret).unwrap();
    independent
        .verify(&got.body, &got.headers)
        .expect("independent verification");
    // ... and so does ours, as a receiver would call it.
    let ours = EndpointSecret::parse(&secret).unwrap();
    verify(
        &ours,
        |name| got.headers.get(name).and_then(|v| v.to_str().ok()),
        &got.body,
    )
    .unwrap();

    // Any tampered body byte fails both.
    for i in 0..got.body.len() {
        let mut body = got.body.to_vec();
        body[i] ^= 0x01;
        assert!(independent.verify(&body, &got.headers).is_err(), "byte {i}");
        assert!(verify(&ours, |n| got.headers.get(n).and_then(|v| v.to_str().ok()), &body).is_err());
    }
    // So do a tampered id, timestamp or signature, and a different secret.
    let ts: i64 = got.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bad = [
        tampered_headers(&got.headers, "webhook-id", "msg_other"),
        tampered_headers(&got.headers, "webhook-timestamp", &(ts + 1).to_string()),
        tampered_headers(
            &got.headers,
            "webhook-signature",
            &format!("{}A", &signature[..signature.len() - 1]),
        ),
    ];
    for h in &bad {
        assert!(independent.verify(&got.body, h).is_err());
    }
    let stranger = standardwebhooks::Webhook::new(EndpointSecret::generate().expose()).unwrap();
    assert!(stranger.verify(&got.body, &got.headers).is_err());
}

async fn invariant3_every_attempt_gets_a_fresh_timestamp_and_signature(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let clock = ManualClock::at(chrono::Utc::now());
    let d = ctx.dispatcher_at(clock.clone(), RetryPolicy::default());
    let (ep, secret) = ctx.endpoint(&d).await;
    ctx.receiver.push_replies([Reply::Status {
        status: 503,
        headers: vec![],
        body: vec![],
    }]);
    d.dispatch(NewMessage::new(&ep, "a", serde_json::json!({"k": "v"})))
        .await
        .unwrap();
    let first_at = clock_secs(&clock);
    d.deliver_due(DeliverDue::default()).await.unwrap();
    clock.advance(Duration::from_secs(61));
    d.deliver_due(DeliverDue::default()).await.unwrap();

    let got = ctx.receiver.received();
    assert_eq!(got.len(), 2);
    let ts: Vec<i64> = got
        .iter()
        .map(|r| r.headers["webhook-timestamp"].to_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        ts,
        [first_at, first_at + 61],
        "timestamp is taken at each attempt"
    );
    assert_ne!(
        got[0].headers["webhook-signature"],
        got[1].headers["webhook-signature"]
    );
    let key = EndpointSecret::parse(&secret).unwrap();
    for (r, t) in got.iter().zip(ts) {
        verify_at(
            &key,
            |n| r.headers.get(n).and_then(|v| v.to_str().ok()),
            &r.body,
            t,
            300,
        )
        .unwrap();
    }
}

fn clock_secs(clock: &ManualClock) -> i64 {
    use webhooks_dispatch::Clock;
    clock.now().timestamp()
}
