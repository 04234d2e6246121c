//! The two baselines that scenario 2's throughput is compared with, each half of the work with nothing else:
//!
//! - (a) HTTP only: a raw keep-alive HTTPS POST loop to the same kind of receiver, with no database. hyper
//!   over rustls trusting the test CA, the same number of requests in flight as the worker's concurrency, each
//!   request signed and shaped like a delivery. HTTP/2 when the receiver's ALPN picks it (it offers h2 first),
//!   over as few connections as its per-connection stream limit allows; else HTTP/1.1 with one kept-alive
//!   connection per in-flight slot.
//! - (b) database only: a raw claim + complete loop on the library's tables with no HTTP: claim 200 due rows
//!   (`FOR UPDATE SKIP LOCKED` plus a lease stamp, joined to the endpoint as a real claim must be), then mark
//!   them delivered and insert their attempts in one statement, until a claim comes back empty.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use sqlx::Row as _;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use webhooks_dispatch::signing::sign;
use webhooks_dispatch::EndpointSecret;
use webhooks_dispatch_testkit::receiver::Reply;

use crate::env::{
    endpoint_url, enqueue_all, payload, setup_endpoints, BoxError, Env, Result, ENDPOINTS, RECEIVER_HOST,
};
use crate::report::Sample;

/// Streams the receiver allows per HTTP/2 connection (hyper's server default, advertised in its SETTINGS). A
/// client of one origin opens one connection per this many requests in flight, no more.
const H2_STREAMS_PER_CONNECTION: usize = 200;
/// Rows per claim in the raw database loop, as the brief fixes it.
const RAW_CLAIM: i64 = 200;

/// Baseline (a): `messages` POSTs from `concurrency` tasks over kept-alive connections.
pub async fn raw_http(env: &Env, messages: usize, concurrency: usize) -> Result<Sample> {
    let receiver = env.receiver(Reply::default()).await?;
    let port = receiver.port();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(env.ca.root_store())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = TlsConnector::from(Arc::new(config));

    // The first connection tells which protocol the receiver negotiates.
    let first = connect(&tls, port).await?;
    let h2 = first.get_ref().1.alpn_protocol() == Some(b"h2");
    let secret = Arc::new(EndpointSecret::generate());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let cpu_start = env.meter.snapshot();
    let started = Instant::now();
    let connections = if h2 {
        let mut senders = Vec::new();
        let mut stream = Some(first);
        for _ in 0..concurrency.div_ceil(H2_STREAMS_PER_CONNECTION) {
            let io = match stream.take() {
                Some(s) => s,
                None => connect(&tls, port).await?,
            };
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        for t in 0..concurrency {
            let mut sender = senders[t % senders.len()].clone();
            let (next, secret) = (next.clone(), secret.clone());
            tasks.spawn(async move {
                while let Some(req) = next_request(&next, messages, &secret, port, true)? {
                    check(sender.send_request(req).await?).await?;
                }
                Ok(())
            });
        }
        senders.len()
    } else {
        let mut stream = Some(first);
        for _ in 0..concurrency {
            let io = match stream.take() {
                Some(s) => s,
                None => connect(&tls, port).await?,
            };
            let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(conn);
            let (next, secret) = (next.clone(), secret.clone());
            tasks.spawn(async move {
                while let Some(req) = next_request(&next, messages, &secret, port, false)? {
                    // Keep-alive: wait until the connection can take the next request instead of reconnecting.
                    sender.ready().await?;
                    check(sender.send_request(req).await?).await?;
                }
                Ok(())
            });
        }
        concurrency
    };
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let cpu = env.meter.since(&cpu_start);
    if receiver.count() != messages {
        return Err(format!("raw HTTP: receiver counted {} of {messages}", receiver.count()).into());
    }
    let protocol = if h2 { "HTTP/2" } else { "HTTP/1.1" };
    Ok(Sample {
        rate: messages as f64 / elapsed.as_secs_f64(),
        note: format!(
            "no database; {protocol} over {connections} TLS connection(s), {concurrency} requests in flight\n{}",
            cpu.describe()
        ),
    })
}

async fn connect(tls: &TlsConnector, port: u16) -> Result<TlsStream<TcpStream>> {
    // Loopback only: the receiver's certificate names receiver.test, which is what we verify against.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    Ok(tls.connect(ServerName::try_from(RECEIVER_HOST)?, tcp).await?)
}

/// The next delivery-shaped request (signed like a real one), or `None` when all have been taken.
fn next_request(
    next: &AtomicUsize,
    total: usize,
    secret: &EndpointSecret,
    port: u16,
    h2: bool,
) -> Result<Option<Request<Full<Bytes>>>> {
    let i = next.fetch_add(1, Ordering::Relaxed);
    if i >= total {
        return Ok(None);
    }
    let id = format!("msg_{}", ulid::Ulid::new());
    let body = serde_json::to_string(&payload(i as u64))?;
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign(secret, &id, timestamp, body.as_bytes()).map_err(|_| "secret unusable")?;
    // HTTP/2 carries the authority in the URI (:authority); HTTP/1.1 in the Host header.
    let url = endpoint_url(port, i % ENDPOINTS);
    let uri = if h2 { url } else { format!("/e{}", i % ENDPOINTS) };
    let mut req = Request::builder().method(Method::POST).uri(uri);
    if !h2 {
        req = req.header(HOST, format!("{RECEIVER_HOST}:{port}"));
    }
    let req = req
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, "webhooks-dispatch-bench")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(body)))?;
    Ok(Some(req))
}

/// Reads the whole response (it is two bytes) and insists on 200.
async fn check(res: http::Response<hyper::body::Incoming>) -> Result<()> {
    let status = res.status();
    res.into_body().collect().await?;
    if status != http::StatusCode::OK {
        return Err(format!("raw HTTP: status {status}").into());
    }
    Ok(())
}

/// Claims up to $2 due rows under lease token $1, as the library's claim does minus its per-endpoint fairness
/// (each with its endpoint's current key).
const CLAIM: &str = "\
WITH due AS (
    SELECT id FROM webhooks_dispatch_outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at <= now())
    ORDER BY next_attempt_at, id
    LIMIT $2::int8
    FOR UPDATE SKIP LOCKED
)
UPDATE webhooks_dispatch_outbox AS o
SET lease_token = $1::text, lease_expires_at = now() + interval '5 minutes'
FROM due, webhooks_dispatch_endpoints AS e, webhooks_dispatch_endpoint_keys AS k
WHERE o.id = due.id AND e.id = o.endpoint_id AND k.endpoint_id = o.endpoint_id AND k.expires_at IS NULL
RETURNING o.id, o.payload, e.url, k.secret";

/// Marks the claimed rows $1 (lease $2) delivered and inserts one attempt each, in one statement.
const COMPLETE: &str = "\
WITH done AS (
    UPDATE webhooks_dispatch_outbox AS o
    SET status = 'delivered', attempts = o.attempts + 1, lease_token = NULL, lease_expires_at = NULL,
        updated_at = now()
    FROM unnest($1::text[]) AS i(id)
    WHERE o.id = i.id AND o.lease_token = $2::text AND o.status = 'pending'
    RETURNING o.id, o.attempts
)
INSERT INTO webhooks_dispatch_attempts (message_id, attempt_no, attempted_at, status_code, outcome, latency_ms)
SELECT id, attempts, now(), 200, 'delivered', 1 FROM done";

/// Baseline (b): claims and completes `messages` pre-enqueued rows on one connection; rows per second.
pub async fn raw_db(env: &Env, messages: usize) -> Result<Sample> {
    let db = env.fresh_database("raw_db").await?;
    let pool = env.pool(&db, 2, false).await?;
    let setup = env.builder(pool.clone()).build();
    // The claim joins the endpoints, so they must exist; nothing is sent to them.
    let urls: Vec<String> = (0..ENDPOINTS).map(|i| endpoint_url(443, i)).collect();
    let endpoints = setup_endpoints(&setup, &urls).await?;
    let targets: Vec<usize> = (0..messages).map(|i| i % ENDPOINTS).collect();
    enqueue_all(&setup, &endpoints, &targets).await?;

    let cpu_start = env.meter.snapshot();
    let started = Instant::now();
    let mut done = 0usize;
    loop {
        let token = ulid::Ulid::new().to_string();
        let claimed = sqlx::query(CLAIM)
            .bind(&token)
            .bind(RAW_CLAIM)
            .fetch_all(&pool)
            .await?;
        if claimed.is_empty() {
            break;
        }
        let ids = claimed
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let completed = sqlx::query(COMPLETE)
            .bind(&ids)
            .bind(&token)
            .execute(&pool)
            .await?;
        done += usize::try_from(completed.rows_affected())?;
    }
    let elapsed = started.elapsed();
    let cpu = env.meter.since(&cpu_start);
    if done != messages {
        return Err::<_, BoxError>(format!("raw claim/complete: {done} of {messages} completed").into());
    }
    pool.close().await;
    env.drop_database(&db).await?;
    Ok(Sample {
        rate: messages as f64 / elapsed.as_secs_f64(),
        note: format!(
            "no HTTP; one connection, claim {RAW_CLAIM} (SKIP LOCKED + lease), complete in one statement\n{}",
            cpu.describe()
        ),
    })
}
