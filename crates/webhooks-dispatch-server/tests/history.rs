//! `GET /v1/messages`: what was sent, newest first, by endpoint, event, state and time, on a live server.

use hyper::Method;
use serde_json::{json, Value};

use crate::engines;
use crate::support::{Engine, TestServer};

engines!(messages_are_listed_newest_first_by_endpoint_event_state_and_time);

/// The ids of a `{"data": [...]}` page.
fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn page(server: &TestServer, query: &str) -> Value {
    let reply = server
        .call(Method::GET, &format!("/v1/messages?{query}"), None)
        .await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.text());
    reply.json()
}

async fn messages_are_listed_newest_first_by_endpoint_event_state_and_time(engine: Engine) {
    let server = TestServer::start(engine).await;
    let (a, _) = server.endpoint().await;
    let (b, _) = server.endpoint().await;
    let mut to_a = Vec::new();
    for n in 0..3 {
        let body = json!({"endpoint_id": a, "event_type": "invoice.paid", "payload": {"n": n}});
        let sent = server.call(Method::POST, "/v1/messages", Some(body)).await;
        assert_eq!(sent.status, 201, "{}", sent.text());
        to_a.push(sent.json()["id"].as_str().unwrap().to_owned());
    }
    let event = json!({"owner_id": "acme", "event_type": "invoice.paid", "payload": {"n": 9}});
    let event = server.call(Method::POST, "/v1/events", Some(event)).await;
    assert_eq!(event.status, 201, "{}", event.text());
    let event = event.json();
    let event_id = event["event_id"].as_str().unwrap();
    let fanned: Vec<&str> = event["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    for id in to_a.iter().map(String::as_str).chain(fanned.iter().copied()) {
        server.wait_for_state(id, "delivered").await;
    }

    // Endpoint a, two at a time: the event's message first (newest), then the direct ones newest first.
    let of_a = event["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["endpoint_id"] == a.as_str())
        .unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = page(&server, &format!("endpoint_id={a}&limit=2")).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = page(&server, &format!("endpoint_id={a}&limit=2&cursor={cursor}")).await;
    assert_eq!(second["next_cursor"], Value::Null);
    let seen = [ids(&first), ids(&second)].concat();
    assert_eq!(seen, [of_a, to_a[2].clone(), to_a[1].clone(), to_a[0].clone()]);
    assert_eq!(first["data"][0]["event_id"], event_id);
    assert_eq!(first["data"][1]["event_id"], Value::Null);
    assert_eq!(first["data"][1]["state"], "delivered");

    let by_event = page(&server, &format!("event_id={event_id}")).await;
    let mut expected: Vec<String> = fanned.iter().map(|id| (*id).to_owned()).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(ids(&by_event), expected);
    let one = page(&server, &format!("event_id={event_id}&endpoint_id={b}")).await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["endpoint_id"], b.as_str());

    assert_eq!(ids(&page(&server, "status=delivered").await).len(), 5);
    assert!(ids(&page(&server, "status=pending").await).is_empty());

    // since is inclusive, until exclusive, on the dispatch time (the event's messages share theirs); any
    // RFC 3339 offset, a `+` percent-encoded.
    let newest = page(&server, "limit=1").await;
    let at = newest["data"][0]["created_at"].as_str().unwrap().to_owned();
    assert_eq!(ids(&page(&server, &format!("since={at}")).await), expected);
    let mut direct = to_a.clone();
    direct.reverse();
    assert_eq!(ids(&page(&server, &format!("until={at}")).await), direct);
    let offset = chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339()
        .replace('+', "%2B");
    assert_eq!(ids(&page(&server, &format!("since={offset}")).await), expected);

    for bad in [
        "limit=0".to_owned(),
        "limit=251".to_owned(),
        "status=gone".to_owned(),
        "since=yesterday".to_owned(),
        "until=2030-13-01T00:00:00Z".to_owned(),
        format!("since={at}&until={at}"),
        "color=red".to_owned(),
        "cursor=".to_owned(),
    ] {
        let reply = server
            .call(Method::GET, &format!("/v1/messages?{bad}"), None)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_input".to_owned()),
            "{bad}: {}",
            reply.text()
        );
    }
    server.stop().await;
}
