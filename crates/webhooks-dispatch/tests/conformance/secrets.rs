//! Invariant 7: an endpoint secret is shown once, at registration, and never again — not in errors, logs,
//! Debug output, attempt records or any other row — in any encoding of its key.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use webhooks_dispatch::keyring::SecretCipher as _;
use webhooks_dispatch::signing::SignatureScheme;
use webhooks_dispatch::store::Value;
use webhooks_dispatch::{DeliverDue, NewEndpoint, NewMessage, RetryPolicy, Worker};
use webhooks_dispatch_testkit::receiver::Reply;
use webhooks_dispatch_testkit::SecretForms;

use crate::support::{bounded, t0, Ctx, Engine, ManualClock, RunningWorker};

/// Collects what the test's own subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Each test runs on its own current-thread runtime with its own scoped subscriber: every task of the test
// (drains, the worker, pooled connections, driver tasks) runs on that thread and is captured, and no other
// test's logs are buffered or slowed by it.
#[test]
fn invariant7_secret_never_appears_in_errors_logs_debug_or_rows_sqlx() {
    secret_is_shown_once(Engine::Sqlx)
}

#[test]
fn invariant7_secret_never_appears_in_errors_logs_debug_or_rows_tokio_postgres() {
    secret_is_shown_once(Engine::TokioPostgres)
}

#[test]
fn invariant7_secret_never_appears_in_errors_logs_debug_or_rows_sqlite() {
    secret_is_shown_once(Engine::Sqlite)
}

fn secret_is_shown_once(engine: Engine) {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _scope = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bounded(
            "invariant7_secret_never_appears_in_errors_logs_debug_or_rows",
            engine,
            exercise(engine, logs),
        ));
}

/// Deliveries that succeed, retry (the endpoint echoes the secret in its 500 body) and fail permanently, on
/// both delivery paths (`deliver_due` and the worker); then every error, Debug text, log line and row.
async fn exercise(engine: Engine, logs: LogBuffer) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher_at(
        ManualClock::at(t0()),
        RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        },
    );
    let registered = d
        .register_endpoint(NewEndpoint::new("o", ctx.url()))
        .await
        .unwrap();
    let shown = registered.secret.clone().expect("an HMAC endpoint");
    let secret = shown.expose().to_owned();
    let forms = SecretForms::of(&secret);
    let mut texts = vec![format!("{registered:?}"), format!("{shown}")];

    let echo = |status| Reply::Status {
        status,
        headers: vec![],
        body: secret.clone().into_bytes(),
    };
    ctx.receiver.push_replies([echo(500), echo(500), echo(400)]);
    let mut ids = Vec::new();
    for i in 0..2 {
        let sent = d.dispatch(NewMessage::new(&registered.id, "a", i)).await.unwrap();
        ids.push(sent.message_id);
    }
    // deliver_due: message 0 fails (500, retried), message 1 fails (500, retried) ...
    d.deliver_due(DeliverDue::default()).await.unwrap();
    // ... the worker: at the retry time, one is answered 400 (dead) and the other 200 (delivered).
    let worker = RunningWorker::spawn(Worker::new(ctx.dispatcher_at(
        ManualClock::at(t0() + chrono::Duration::hours(1)),
        RetryPolicy::default(),
    )));
    assert!(ctx.receiver.wait_for(4, Duration::from_secs(20)).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ctx.scalar(ATTEMPT_COUNT, &[]).await < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker's attempts were not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = worker.stop().await;
    assert_eq!(report.deliveries.attempted, 2, "{report:?}");

    for id in &ids {
        let attempts = d.list_attempts(id).await.unwrap();
        texts.push(format!("{attempts:?}"));
        texts.push(serde_json::to_string(&attempts).unwrap());
        texts.push(format!("{:?}", d.message(id).await.unwrap()));
    }
    let endpoint = d.endpoint(&registered.id).await.unwrap();
    texts.push(format!("{endpoint:?}"));
    texts.push(serde_json::to_string(&endpoint).unwrap());
    texts.push(format!("{d:?}"));
    for err in [
        d.dispatch(NewMessage::new(&registered.id, " ", 1))
            .await
            .unwrap_err(),
        d.register_endpoint(NewEndpoint::new("o", format!("http://{secret}/")))
            .await
            .unwrap_err(),
        d.register_endpoint(NewEndpoint::new(&secret, "https://[::1]/"))
            .await
            .unwrap_err(),
    ] {
        texts.push(err.to_string());
        texts.push(format!("{err:?}"));
    }
    // An ed25519 endpoint's signing key, which no call ever returns: read from its sealed row with the test's
    // ring, it must appear nowhere either, not even after a delivery signed with it.
    let ed = d
        .register_endpoint(NewEndpoint::new("o", ctx.url()).signature(SignatureScheme::Ed25519))
        .await
        .unwrap();
    d.dispatch(NewMessage::new(&ed.id, "a", 9)).await.unwrap();
    d.deliver_due(DeliverDue::default()).await.unwrap();
    let sealed = ctx
        .exec
        .query(
            "SELECT secret FROM webhooks_dispatch_endpoint_keys WHERE id = $1",
            &[ed.key.id.as_str().into()],
        )
        .await
        .unwrap();
    let signing_key = ctx.ring.open(&ed.key.id, &sealed[0].text(0).unwrap()).unwrap();
    assert!(signing_key.starts_with("whsk_"));
    let ed_forms = SecretForms::of(&signing_key);
    texts.push(format!("{ed:?}"));
    texts.push(format!("{:?}", d.endpoint_keys(&ed.id).await.unwrap()));
    texts.push(format!("{:?}", d.owner_key_set("o").await.unwrap()));
    // Every column of every row, the keys' included: sealed by the key ring, they hold no form of the
    // secret (encryption at rest); nor does the ring's Debug.
    texts.push(format!("{:?}", ctx.ring));
    texts.push(format!("{:?}", d.endpoint_keys(&registered.id).await.unwrap()));
    for sql in ROWS {
        for row in ctx.exec.query(sql, &[]).await.unwrap() {
            texts.push(format!("{row:?}"));
            for value in row.0 {
                if let Value::Text(text) = value {
                    texts.push(text);
                }
            }
        }
    }
    for text in &texts {
        forms.assert_absent("a returned value, error or row", text.as_bytes());
        ed_forms.assert_absent("a returned value, error or row", text.as_bytes());
    }
    let log_bytes = logs.0.lock().unwrap().clone();
    let log_text = String::from_utf8_lossy(&log_bytes);
    for id in &ids {
        assert!(
            log_text.contains("webhook attempt") && log_text.contains(id.as_str()),
            "the attempt log lines were captured"
        );
    }
    forms.assert_absent("the logs", &log_bytes);
    ed_forms.assert_absent("the logs", &log_bytes);
}

const ATTEMPT_COUNT: &str = "SELECT count(*) FROM webhooks_dispatch_attempts";

/// Every column of every row.
const ROWS: [&str; 4] = [
    "SELECT * FROM webhooks_dispatch_attempts",
    "SELECT * FROM webhooks_dispatch_outbox",
    "SELECT * FROM webhooks_dispatch_endpoints",
    "SELECT * FROM webhooks_dispatch_endpoint_keys",
];
