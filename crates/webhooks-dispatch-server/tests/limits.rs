//! The API server's limits against hostile clients: silent and trickling connections are closed by the
//! header read timeout, connections beyond the cap are shed on arrival, a slow request body is answered 408,
//! and through all of it the API answers and the worker delivers.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::engines;
use crate::support::{eventually, get, send, Engine, TestServer};

engines!(
    silent_connections_are_closed_and_shed_while_the_api_answers_and_deliveries_succeed,
    a_request_whose_body_never_finishes_is_answered_408,
    an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout,
);

const CAP: usize = 32;
const HEADER_READ: Duration = Duration::from_millis(800);

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

// Catches: no header read timeout (silent connections held forever), no cap (every connection accepted and
// held), and a flood that stops the API from answering or the worker from delivering.
async fn silent_connections_are_closed_and_shed_while_the_api_answers_and_deliveries_succeed(engine: Engine) {
    let server = TestServer::start_with(engine, |c| {
        c.server_limits.max_connections = CAP;
        c.server_limits.header_read_timeout = HEADER_READ;
    })
    .await;
    let (endpoint, _) = server.endpoint().await;

    // Four times the cap of connections that send half a request line and then trickle a byte at a time.
    let mut silent = Vec::new();
    for _ in 0..CAP * 4 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let _ = stream.write_all(b"POST /v1/mess").await;
        silent.push(stream);
    }
    let opened = Instant::now();

    // Those over the cap are closed at once; the rest when the header read timeout passes, trickling or not.
    let mut shed_at_once = 0;
    for stream in &mut silent[CAP..] {
        if closed_within(stream, Duration::from_millis(200)).await {
            shed_at_once += 1;
        }
    }
    assert!(shed_at_once >= CAP * 2, "only {shed_at_once} shed on arrival");
    for stream in &mut silent[..CAP] {
        let _ = stream.write_all(b"a").await;
    }
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(stream, HEADER_READ * 4).await,
            "connection {i} still open after {:?}",
            opened.elapsed()
        );
    }

    // Meanwhile and after, the API answers and the worker delivers.
    let body = json!({"endpoint_id": endpoint, "event_type": "a", "payload": {"n": 1}});
    let sent = eventually("the API takes a message", Duration::from_secs(10), || {
        let body = body.clone();
        let server = &server;
        async move {
            let reply = server.call(Method::POST, "/v1/messages", Some(body)).await;
            (reply.status == 201).then(|| reply.json()["id"].as_str().unwrap().to_owned())
        }
    })
    .await;
    server.wait_for_state(&sent, "delivered").await;
    let metrics = send(server.addr, get("/metrics")).await.text();
    let shed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("webhooks_dispatch_api_connections_shed_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("shed counter exported");
    assert!(shed >= (CAP * 2) as u64, "{shed}");
    server.stop().await;
}

// Catches: a request timeout that does not cover reading the body (a client that declares a body and sends
// it slowly holds a handler forever).
async fn a_request_whose_body_never_finishes_is_answered_408(engine: Engine) {
    let server = TestServer::start_with(engine, |c| {
        c.server_limits.request_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"endpoint_id\":",
        crate::support::API_KEY
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The server is fine afterwards.
    assert_eq!(send(server.addr, get("/healthz")).await.status, 200);
    server.stop().await;
}

// Catches: keep-alive connections held open forever once they have made one request.
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout(engine: Engine) {
    let server = TestServer::start_with(engine, |c| {
        c.server_limits.header_read_timeout = HEADER_READ;
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let idle = Instant::now();
    assert!(
        closed_within(&mut stream, HEADER_READ * 4).await,
        "idle connection kept open"
    );
    assert!(
        idle.elapsed() >= HEADER_READ / 2,
        "closed too early: {:?}",
        idle.elapsed()
    );
    server.stop().await;
}
