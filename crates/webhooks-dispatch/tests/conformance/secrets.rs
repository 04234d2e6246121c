use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use webhooks_dispatch::{DeliverDue, NewEndpoint, NewMessage, RetryPolicy};
use webhooks_dispatch_testkit::receiver::Reply;

use crate::support::{t0, Ctx, Engine, ManualClock};

/// Collects everything the process-wide tracing subscriber writes.
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

/// Installs one global subscriber for the whole test process. A thread-local one (`set_default`) is not
/// reliable here: other tests' threads share tracing's per-callsite interest cache, and the delivery's own
/// tasks may run on other threads. Everything at debug and above is captured, including the drivers' (sqlx
/// logs statements), so a secret leaking through any layer shows up.
fn captured_logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug,webhooks_dispatch=trace")
            .with_writer(move || writer.clone())
            .init();
        logs
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant7_secret_never_appears_in_errors_logs_debug_or_attempts_sqlx() {
    secret_is_shown_once(Engine::Sqlx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant7_secret_never_appears_in_errors_logs_debug_or_attempts_tokio_postgres() {
    secret_is_shown_once(Engine::TokioPostgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant7_secret_never_appears_in_errors_logs_debug_or_attempts_sqlite() {
    secret_is_shown_once(Engine::Sqlite).await
}

async fn secret_is_shown_once(engine: Engine) {
    let logs = captured_logs();
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
    let secret = registered.secret.expose().to_owned();
    let key_part = secret.strip_prefix("whsec_").unwrap().to_owned();
    assert!(key_part.len() >= 32, "at least 24 random bytes, base64");

    let mut texts = vec![format!("{registered:?}"), format!("{}", registered.secret)];
    ctx.receiver.set_default_reply(Reply::Status {
        status: 500,
        headers: vec![],
        body: secret.clone().into_bytes(),
    });
    let id = d
        .dispatch(NewMessage::new(&registered.id, "a", 1))
        .await
        .unwrap()
        .message_id;
    d.deliver_due(DeliverDue::default()).await.unwrap();
    d.deliver_due(DeliverDue {
        now: Some(t0() + chrono::Duration::hours(1)),
        batch: None,
    })
    .await
    .unwrap();

    let attempts = d.list_attempts(&id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    texts.push(format!("{attempts:?}"));
    texts.push(serde_json::to_string(&attempts).unwrap());
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
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains("webhook attempt") && log_text.contains(&id),
        "the attempt log lines were captured"
    );
    texts.push(log_text);
    for text in &texts {
        assert!(!text.contains(&key_part), "secret leaked into: {text}");
    }
    // Not even the endpoint's echo of it in a response body is kept.
    assert!(attempts
        .iter()
        .all(|a| !a.error.as_deref().unwrap_or("").contains(&key_part)));
}
