//! Fan-out and endpoint status through the HTTP API, against a live server with its worker.

use std::time::Duration;

use hyper::Method;
use serde_json::json;
use webhooks_dispatch::{verify, EndpointSecret};

use crate::engines;
use crate::support::{authorize, build, send, set_header, Engine, TestServer, API_KEY};

engines!(
    an_event_fans_out_to_the_owners_endpoints_and_skips_a_disabled_one,
    disabling_an_endpoint_refuses_its_messages_until_it_is_enabled,
    endpoints_are_listed_a_page_at_a_time_by_owner_and_status,
    an_endpoint_is_changed_with_patch_and_deleted_with_delete,
);

/// `POST /v1/events` with an `Idempotency-Key`.
async fn post_event(server: &TestServer, body: &str, key: &str) -> crate::support::Reply {
    let mut req = build(Method::POST, "/v1/events", Some(body.to_owned()));
    authorize(&mut req, API_KEY);
    set_header(&mut req, "idempotency-key", key);
    send(server.addr, req).await
}

async fn an_event_fans_out_to_the_owners_endpoints_and_skips_a_disabled_one(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (a, secret_a) = server.endpoint().await;
    let (b, secret_b) = server.endpoint().await;
    let (off, _) = server.endpoint().await;
    let disabled = server
        .call(Method::POST, &format!("/v1/endpoints/{off}/disable"), None)
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(disabled.json()["status"], "disabled");
    assert_eq!(disabled.json()["disabled_reason"], "manual");

    // Sent byte for byte: spacing and key order survive.
    let payload = r#"{"z": 1, "a": [true, null]}"#;
    let body = format!(r#"{{"owner_id": "acme", "event_type": "invoice.paid", "payload": {payload}}}"#);
    let sent = post_event(&server, &body, "inv-1-paid").await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let sent = sent.json();
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    assert!(event_id.starts_with("evt_") && sent["created"] == true, "{sent}");
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    let targets: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["endpoint_id"].as_str().unwrap())
        .collect();
    assert_eq!(targets, expected);
    assert_eq!(
        sent["skipped"],
        json!([{"endpoint_id": off, "reason": "endpoint_disabled", "disabled_reason": "manual"}])
    );

    // A replay is 200 with the same event and messages; the key with another payload is a conflict.
    let again = post_event(&server, &body, "inv-1-paid").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(
        (again.json()["event_id"].clone(), again.json()["messages"].clone()),
        (sent["event_id"].clone(), sent["messages"].clone())
    );
    let changed = body.replace(r#""z": 1"#, r#""z": 2"#);
    let conflict = post_event(&server, &changed, "inv-1-paid").await;
    assert_eq!(
        (conflict.status, conflict.code()),
        (409, "idempotency_conflict".to_owned())
    );

    // Delivered once per endpoint, each signed with its own secret, the payload as sent.
    let receiver = &server.fixture.receiver;
    assert!(receiver.wait_for(2, Duration::from_secs(30)).await, "delivered");
    let secrets = [(a, secret_a), (b, secret_b)];
    for m in sent["messages"].as_array().unwrap() {
        let id = m["message_id"].as_str().unwrap();
        let got = receiver
            .received()
            .into_iter()
            .find(|r| r.headers["webhook-id"] == id)
            .unwrap_or_else(|| panic!("{id} not delivered"));
        assert_eq!(got.body, payload.as_bytes());
        let secret = &secrets
            .iter()
            .find(|(e, _)| e == m["endpoint_id"].as_str().unwrap())
            .unwrap()
            .1;
        let secret = EndpointSecret::parse(secret).unwrap();
        verify(&secret, |name| got.headers.get(name)?.to_str().ok(), &got.body).expect("valid signature");
        server.wait_for_state(id, "delivered").await;
    }
    assert_eq!(receiver.count(), 2, "nothing to the disabled endpoint");

    let shown = server
        .call(Method::GET, &format!("/v1/events/{event_id}"), None)
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert!(
        shown.text().contains(payload),
        "the stored payload is the exact text: {}",
        shown.text()
    );
    assert_eq!(
        (shown.json()["owner_id"].clone(), shown.json()["messages"].clone()),
        (json!("acme"), sent["messages"].clone())
    );
    let unknown = server.call(Method::GET, "/v1/events/evt_nope", None).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "unknown_event".to_owned())
    );
    server.stop().await;
}

async fn disabling_an_endpoint_refuses_its_messages_until_it_is_enabled(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.worker = false).await;
    let (ep, _) = server.endpoint().await;
    let message = json!({"endpoint_id": ep, "event_type": "a", "payload": {"n": 1}});
    let off = server
        .call(Method::POST, &format!("/v1/endpoints/{ep}/disable"), None)
        .await;
    assert_eq!(off.status, 200, "{}", off.text());
    let shown = server
        .call(Method::GET, &format!("/v1/endpoints/{ep}"), None)
        .await;
    assert_eq!(shown.json()["status"], "disabled");
    assert!(shown.json()["disabled_at"].is_string());
    let refused = server
        .call(Method::POST, "/v1/messages", Some(message.clone()))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (409, "endpoint_disabled".to_owned())
    );

    let on = server
        .call(Method::POST, &format!("/v1/endpoints/{ep}/enable"), None)
        .await;
    assert_eq!(on.status, 200, "{}", on.text());
    assert_eq!(
        (on.json()["status"].clone(), on.json()["disabled_reason"].clone()),
        (json!("active"), json!(null))
    );
    let accepted = server.call(Method::POST, "/v1/messages", Some(message)).await;
    assert_eq!(accepted.status, 201, "{}", accepted.text());
    for path in ["/v1/endpoints/ep_nope/disable", "/v1/endpoints/ep_nope/enable"] {
        let reply = server.call(Method::POST, path, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (404, "unknown_endpoint".to_owned()),
            "{path}"
        );
    }
    server.stop().await;
}

async fn endpoints_are_listed_a_page_at_a_time_by_owner_and_status(engine: Engine) {
    let server = TestServer::start_with(engine, |c| c.worker = false).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(server.endpoint().await.0);
    }
    let other = json!({"owner_id": "globex", "url": server.fixture.receiver_url()});
    assert_eq!(
        server
            .call(Method::POST, "/v1/endpoints", Some(other))
            .await
            .status,
        201
    );
    server
        .call(Method::POST, &format!("/v1/endpoints/{}/disable", ids[1]), None)
        .await;

    let first = server
        .call(Method::GET, "/v1/endpoints?owner_id=acme&limit=2", None)
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let second = server
        .call(
            Method::GET,
            &format!("/v1/endpoints?owner_id=acme&limit=2&cursor={cursor}"),
            None,
        )
        .await
        .json();
    assert_eq!(second["next_cursor"], json!(null));
    let seen: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ids, "acme's endpoints once each, in registration order");
    assert!(!first.to_string().contains("whsec_"), "never a secret");

    let disabled = server
        .call(Method::GET, "/v1/endpoints?status=disabled", None)
        .await
        .json();
    assert_eq!(disabled["data"].as_array().unwrap().len(), 1);
    assert_eq!(disabled["data"][0]["id"], ids[1].as_str());
    let all = server.call(Method::GET, "/v1/endpoints", None).await.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 4);
    for bad in [
        "/v1/endpoints?limit=251",
        "/v1/endpoints?limit=0",
        "/v1/endpoints?status=gone",
        "/v1/endpoints?color=red",
    ] {
        let reply = server.call(Method::GET, bad, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_input".to_owned()),
            "{bad}"
        );
    }
    server.stop().await;
}

async fn an_endpoint_is_changed_with_patch_and_deleted_with_delete(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (id, _) = server.endpoint().await;
    let path = format!("/v1/endpoints/{id}");
    let patch = json!({
        "description": "billing",
        "metadata": {"team": "payments"},
        "headers": {"Authorization": "Bearer api-credential"},
        "event_types": ["invoice.paid"]
    });
    let changed = server.call(Method::PATCH, &path, Some(patch)).await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    let json = changed.json();
    assert_eq!(json["description"], "billing");
    assert_eq!(json["metadata"], json!({"team": "payments"}));
    assert_eq!(json["header_names"], json!(["authorization"]));
    assert_eq!(json["event_types"], json!(["invoice.paid"]));
    assert!(!changed.text().contains("api-credential"), "{}", changed.text());

    // The header goes out with the delivery.
    let body = json!({"endpoint_id": id, "event_type": "invoice.paid", "payload": {"n": 1}});
    let sent = server.call(Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let receiver = &server.fixture.receiver;
    assert!(receiver.wait_for(1, Duration::from_secs(30)).await, "delivered");
    assert_eq!(
        receiver.received()[0].headers["authorization"],
        "Bearer api-credential"
    );

    for (patch, code) in [
        (json!({"headers": {"webhook-id": "x"}}), "invalid_input"),
        (json!({"url": "https://10.1.2.3/hook"}), "invalid_url"),
        (json!({"colour": "red"}), "invalid_json"),
    ] {
        let refused = server.call(Method::PATCH, &path, Some(patch.clone())).await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, code.to_owned()),
            "{patch}"
        );
    }

    // Arrival is not the end of the attempt: wait until it is recorded, or the delete would end the message
    // itself (messages_ended 1) when it races the worker's write.
    let message_path = format!("/v1/messages/{}", sent.json()["id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.call(Method::GET, &message_path, None).await.json()["state"] != "delivered" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deleted = server.call(Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json(), json!({"id": id, "messages_ended": 0}));
    for (method, body) in [
        (Method::GET, None),
        (Method::DELETE, None),
        (Method::PATCH, Some(json!({"description": "x"}))),
    ] {
        let gone = server.call(method.clone(), &path, body).await;
        assert_eq!(
            (gone.status, gone.code()),
            (404, "unknown_endpoint".to_owned()),
            "{method}"
        );
    }
    let body = json!({"endpoint_id": id, "event_type": "invoice.paid", "payload": {}});
    let refused = server.call(Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(refused.status, 404, "{}", refused.text());
}
