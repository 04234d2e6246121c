use std::error::Error as _;
use std::sync::Arc;

use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::{DeliverDue, DispatchError, Dispatcher, NewEndpoint, NewMessage, MAX_PAYLOAD_BYTES};

use crate::conformance;
use crate::support::{CountingExecutor, Ctx, Engine};

conformance!(
    invariant1_inputs_rejected_with_typed_errors_before_any_sql,
    invariant1_storage_failure_is_typed_and_hides_driver_error,
);

#[tokio::test]
async fn invariant1_construction_performs_no_io() {
    // An executor over an unreachable pool would fail on first use; a counting wrapper proves none happens.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let exec = CountingExecutor::new(pool);
    let resolver = StaticResolver::new();
    let d = Dispatcher::new(exec.clone());
    let built = Dispatcher::builder(exec.clone())
        .resolver(Arc::new(resolver.clone()))
        .allow_net("10.0.0.0/8".parse().unwrap())
        .build();
    let _other = built.using(exec.clone());
    drop(d);
    assert_eq!(exec.count(), 0, "constructing a dispatcher issued SQL");
    assert_eq!(resolver.lookups(), 0, "constructing a dispatcher resolved a name");
}

async fn invariant1_inputs_rejected_with_typed_errors_before_any_sql(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let exec = CountingExecutor::new(ctx.exec.clone());
    let d = ctx.builder().build();
    let d = d.using(exec.clone());
    let url = ctx.url();
    let long = |n: usize| "x".repeat(n);

    let endpoint_cases: Vec<(NewEndpoint, &str)> = vec![
        (NewEndpoint::new("", &url), "invalid_input"),
        (NewEndpoint::new("  \t", &url), "invalid_input"),
        (NewEndpoint::new(long(513), &url), "invalid_input"),
        (
            NewEndpoint::new("o", format!("https://{}.test/", long(2040))),
            "invalid_url",
        ),
        (NewEndpoint::new("o", "http://receiver.test/hook"), "invalid_url"),
        (NewEndpoint::new("o", "not a url"), "invalid_url"),
        (
            NewEndpoint::new("o", &url).event_types((0..65).map(|i| format!("t{i}"))),
            "invalid_input",
        ),
        (NewEndpoint::new("o", &url).event_types([" "]), "invalid_input"),
        (
            NewEndpoint::new("o", &url).event_types([long(257)]),
            "invalid_input",
        ),
    ];
    for (input, code) in endpoint_cases {
        let err = d.register_endpoint(input).await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(err.http_status(), 400);
    }
    // Exactly at the limits is accepted by validation (and then reaches SQL).
    let at_limit = NewEndpoint::new(long(512), &url).event_types((0..64).map(|i| format!("t{i}")));
    d.register_endpoint(at_limit).await.unwrap();
    assert_eq!(exec.count(), 1);
    let before = exec.count();

    let message_cases: Vec<(NewMessage<serde_json::Value>, &str)> = vec![
        (NewMessage::new("", "a", serde_json::json!(1)), "invalid_input"),
        (
            NewMessage::new(long(513), "a", serde_json::json!(1)),
            "invalid_input",
        ),
        (
            NewMessage::new("ep_x", " ", serde_json::json!(1)),
            "invalid_input",
        ),
        (
            NewMessage::new("ep_x", long(257), serde_json::json!(1)),
            "invalid_input",
        ),
        (
            NewMessage::new("ep_x", "a", serde_json::json!(1)).idempotency_key(long(513)),
            "invalid_input",
        ),
        (
            NewMessage::new("ep_x", "a", serde_json::json!(long(MAX_PAYLOAD_BYTES))),
            "invalid_payload",
        ),
    ];
    for (input, code) in message_cases {
        let err = d.dispatch(input).await.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(err.http_status(), 400);
    }
    // A payload whose serialization fails is invalid_payload, not a panic.
    let mut bad_map = std::collections::HashMap::new();
    bad_map.insert(vec![1u8], 1);
    let err = d
        .dispatch(NewMessage::new("ep_x", "a", bad_map))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_payload");

    for batch in [0, 1001] {
        let err = d
            .deliver_due(DeliverDue {
                now: None,
                batch: Some(batch),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input");
    }
    assert_eq!(d.list_attempts("").await.unwrap_err().code(), "invalid_input");
    assert_eq!(d.message(&long(513)).await.unwrap_err().code(), "invalid_input");
    assert_eq!(exec.count(), before, "an invalid input reached the database");
    assert_eq!(ctx.receiver.count(), 0);
}

async fn invariant1_storage_failure_is_typed_and_hides_driver_error(engine: Engine) {
    // A fresh database without migrate(): every statement fails inside the driver.
    let (exec, _) = engine.connect().await;
    let d = Dispatcher::new(exec);
    let err = d
        .dispatch(NewMessage::new(
            "ep_x",
            "invoice.paid",
            serde_json::json!({"n": 1}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "storage");
    assert_eq!(err.http_status(), 500);
    assert_eq!(err.to_string(), "storage error");
    let DispatchError::Storage(storage) = &err else {
        panic!("expected storage error, got {err:?}")
    };
    match engine {
        // SQLite reports a missing table with its generic error code, so it is unclassified there.
        Engine::Sqlite => assert_eq!(storage.kind(), webhooks_dispatch::StorageErrorKind::Other),
        _ => {
            assert_eq!(
                storage.kind(),
                webhooks_dispatch::StorageErrorKind::UndefinedTable
            );
            assert_eq!(storage.sqlstate(), Some("42P01"));
        }
    }
    for text in [err.to_string(), format!("{err:?}"), storage.to_string()] {
        assert!(!text.contains("webhooks_dispatch_"), "driver text leaked: {text}");
    }
    let driver = err
        .source()
        .and_then(|s| s.source())
        .expect("driver error reachable via source()");
    // tokio-postgres keeps the server's message one level further down; Debug shows the whole chain.
    assert!(format!("{driver:?}").contains("webhooks_dispatch_"), "{driver:?}");

    // Once migrated, a missing row is a typed not-found, not a storage error.
    d.migrate().await.unwrap();
    let err = d.endpoint("ep_missing").await.unwrap_err();
    assert_eq!(err.code(), "unknown_endpoint");
    assert_eq!(err.http_status(), 404);
}
