use std::error::Error as _;
use std::sync::Arc;

use std::time::Duration;

use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::store::{BoxFuture, Executor, Row, Value};
use webhooks_dispatch::{
    DeliverDue, DispatchError, Dispatcher, NewEndpoint, NewMessage, StorageError, Worker, MAX_PAYLOAD_BYTES,
};

use crate::conformance;
use crate::support::{CountingExecutor, Ctx, Engine};

conformance!(
    invariant1_inputs_rejected_with_typed_errors_before_any_sql,
    invariant1_storage_failure_is_typed_and_hides_driver_error,
);

/// An executor with no database behind it: every statement fails (and is counted by the wrapper around it).
struct NoDatabase;

impl Executor for NoDatabase {
    fn query<'a>(&'a self, _: &'static str, _: &'a [Value]) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        Box::pin(async { Err(StorageError::from_driver(None, true, "no database")) })
    }
    fn batch_execute<'a>(&'a self, _: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Err(StorageError::from_driver(None, true, "no database")) })
    }
}

/// Builds every kind of handle the library offers (dispatcher, builder with every setter that could tempt a
/// connection or lookup, `using`, worker) and keeps them alive.
fn construct_everything(
    exec: &Arc<CountingExecutor<NoDatabase>>,
    resolver: &StaticResolver,
) -> Vec<Box<dyn std::any::Any>> {
    let plain = Dispatcher::new(exec.clone());
    let built = Dispatcher::builder(exec.clone())
        .resolver(Arc::new(resolver.clone()))
        .allow_net("10.0.0.0/8".parse().unwrap())
        .dns_cache_ttl(Duration::from_secs(30))
        .http2(true)
        .build();
    let other = built.using(exec.clone());
    let worker = Worker::new(built.clone()).poll_interval(Duration::from_millis(1));
    vec![
        Box::new(plain),
        Box::new(built),
        Box::new(other),
        Box::new(worker),
    ]
}

/// Construction is checked twice. Outside any runtime, so that spawning a task (a query, a lookup, a
/// connection warm-up) would panic instead of slipping by; and inside a multi-threaded runtime that then
/// yields and lets timers run, so that work deferred to a task or a thread would have happened by the time
/// the counts are read.
#[test]
fn invariant1_construction_performs_no_io() {
    let exec = CountingExecutor::new(NoDatabase);
    let resolver = StaticResolver::new();
    let outside = construct_everything(&exec, &resolver);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inside = runtime.block_on(async {
        let inside = construct_everything(&exec, &resolver);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        inside
    });
    assert_eq!(exec.count(), 0, "constructing a dispatcher issued SQL");
    assert_eq!(resolver.lookups(), 0, "constructing a dispatcher resolved a name");
    drop((outside, inside));
    drop(runtime);
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
