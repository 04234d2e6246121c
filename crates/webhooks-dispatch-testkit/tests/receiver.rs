use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use webhooks_dispatch_testkit::receiver::{ClosedPort, Receiver, ReceiverOptions, Reply, TestCa};

async fn tls(ca: &TestCa, receiver: &Receiver, name: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.root_store())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(receiver.addr()).await.unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap()
}

type H1 = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h1(ca: &TestCa, receiver: &Receiver) -> H1 {
    let stream = tls(ca, receiver, "receiver.test", &[b"http/1.1"]).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", "receiver.test")
        .header("webhook-id", "msg_1")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn text(response: http::Response<Incoming>) -> (StatusCode, String) {
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn start(ca: &TestCa) -> Receiver {
    Receiver::start(ca, ReceiverOptions::default()).await.unwrap()
}

#[tokio::test]
async fn http1_request_is_answered_and_recorded() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    let mut client = h1(&ca, &receiver).await;
    let response = client.send_request(post("/hook?x=1", "hello")).await.unwrap();
    assert_eq!(text(response).await, (StatusCode::OK, "ok".to_owned()));

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sni.as_deref(), Some("receiver.test"));
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook?x=1");
    assert_eq!(got[0].headers["webhook-id"], "msg_1");
    assert_eq!(got[0].body, "hello");
    assert_eq!(got[0].http_version, Version::HTTP_11);
    assert_eq!(receiver.count(), 1);
    assert_eq!(receiver.connections_accepted(), 1);
}

#[tokio::test]
async fn scripted_replies_come_first_then_the_default() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    receiver.push_replies([
        Reply::status(500),
        Reply::Status {
            status: 503,
            headers: vec![("retry-after".into(), "7".into())],
            body: b"busy".to_vec(),
        },
    ]);
    receiver.set_default_reply(Reply::status(204));
    let mut client = h1(&ca, &receiver).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = client.send_request(post("/hook", "x")).await.unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        seen.push((text(response).await, retry_after));
    }
    assert_eq!(seen[0].0, (StatusCode::INTERNAL_SERVER_ERROR, String::new()));
    assert_eq!(seen[1].0, (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned()));
    assert_eq!(seen[1].1.as_ref().unwrap(), "7");
    assert_eq!(seen[2].0, (StatusCode::NO_CONTENT, String::new()));
    // Keep-alive: all three on one connection.
    assert_eq!(receiver.connections_accepted(), 1);
    assert!(receiver.wait_for(3, Duration::from_secs(1)).await);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    let stream = tls(&ca, &receiver, "receiver.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::post("https://receiver.test/h2")
        .body(Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(text(response).await, (StatusCode::OK, "ok".to_owned()));
    let got = receiver.received();
    assert_eq!(got[0].http_version, Version::HTTP_2);
    assert_eq!(got[0].path, "/h2");
    assert_eq!(got[0].body, "over h2");
    assert_eq!(got[0].sni.as_deref(), Some("receiver.test"));
}

#[tokio::test]
async fn ip_certificate_and_no_sni() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    let stream = tls(&ca, &receiver, "127.0.0.1", &[]).await;
    let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = client.send_request(post("/", "")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(receiver.received()[0].sni, None);
}

#[tokio::test]
async fn hang_never_answers() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    receiver.push_replies([Reply::Hang]);
    let mut client = h1(&ca, &receiver).await;
    let pending = tokio::time::timeout(
        Duration::from_millis(500),
        client.send_request(post("/hang", "zzz")),
    )
    .await;
    assert!(pending.is_err(), "got a response");
    assert!(receiver.wait_for(1, Duration::from_secs(1)).await);
    assert_eq!(receiver.received()[0].body, "zzz");
    assert_eq!(receiver.max_in_flight_for("/hang"), 1);
}

#[tokio::test]
async fn trickle_writes_one_byte_at_a_time() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    receiver.push_replies([Reply::Trickle {
        every: Duration::from_millis(30),
    }]);
    let mut stream = tls(&ca, &receiver, "receiver.test", &[b"http/1.1"]).await;
    stream
        .write_all(b"POST /slow HTTP/1.1\r\nhost: receiver.test\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
    let mut buf = [0u8; 256];
    while let Ok(read) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        let n = read.unwrap();
        // A late-scheduled reader may see a few records at once.
        assert!((1..=3).contains(&n), "{n} bytes arrived at once");
        got.extend_from_slice(&buf[..n]);
        reads += 1;
    }
    assert!(reads >= 5, "only {reads} reads in 600 ms");
    assert!(got.len() <= 25, "too fast: {got:?}");
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(!got.windows(4).any(|w| w == b"\r\n\r\n"));
    assert_eq!(receiver.received()[0].body, "hi");
}

#[tokio::test]
async fn endless_body_keeps_streaming() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    receiver.set_default_reply(Reply::EndlessBody);
    let mut client = h1(&ca, &receiver).await;
    let response = client.send_request(post("/big", "")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut total = 0;
    while total < 256 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        total += frame.into_data().unwrap().len();
    }
    assert_eq!(receiver.max_in_flight(), 1);
}

#[tokio::test]
async fn delayed_replies_overlap_and_are_counted() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    receiver.set_default_reply(Reply::Delayed(Duration::from_millis(300)));
    let mut tasks = Vec::new();
    for path in ["/a", "/a", "/b"] {
        let mut client = h1(&ca, &receiver).await;
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = client.send_request(post(path, "")).await.unwrap();
            (response.status(), started.elapsed())
        }));
    }
    for task in tasks {
        let (status, elapsed) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(elapsed >= Duration::from_millis(300));
    }
    assert_eq!(receiver.connections_accepted(), 3);
    assert_eq!(receiver.max_in_flight(), 3);
    assert_eq!(receiver.max_in_flight_for("/a"), 2);
    assert_eq!(receiver.max_in_flight_for("/b"), 1);
    assert_eq!(receiver.max_in_flight_for("/c"), 0);
}

#[tokio::test]
async fn connections_are_counted_before_tls_and_wait_for_times_out() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    let plain = TcpStream::connect(receiver.addr()).await.unwrap();
    let _client = h1(&ca, &receiver).await;
    assert_eq!(receiver.connections_accepted(), 2);
    assert!(!receiver.wait_for(1, Duration::from_millis(100)).await);
    drop(plain);
}

#[tokio::test]
async fn dropping_the_receiver_closes_its_port() {
    let ca = TestCa::new();
    let receiver = start(&ca).await;
    let addr = receiver.addr();
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn start_on_same_port_serves_one_port_on_every_address() {
    let ca = TestCa::new();
    let binds: Vec<IpAddr> = [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]]
        .map(|ip| IpAddr::V4(Ipv4Addr::from(ip)))
        .to_vec();
    let names = vec!["receiver.test".to_owned(), "moved.test".to_owned()];
    let receivers = Receiver::start_on_same_port(&ca, &binds, names).await.unwrap();
    assert_eq!(receivers.len(), 3);
    let port = receivers[0].port();
    assert_ne!(port, 0);
    for (receiver, ip) in receivers.iter().zip(&binds) {
        assert_eq!(receiver.addr(), SocketAddr::new(*ip, port));
    }
    // Each address is its own receiver, with its own record, and the certificate carries every name.
    for (i, receiver) in receivers.iter().enumerate() {
        let stream = tls(&ca, receiver, "moved.test", &[b"http/1.1"]).await;
        let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let response = client.send_request(post(&format!("/r{i}"), "x")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    for (i, receiver) in receivers.iter().enumerate() {
        let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, [format!("/r{i}")]);
        assert_eq!(receiver.received()[0].sni.as_deref(), Some("moved.test"));
    }
}

#[tokio::test]
async fn start_on_same_port_refuses_an_address_twice_and_accepts_none() {
    let ca = TestCa::new();
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let names = ReceiverOptions::default().names;
    let twice = Receiver::start_on_same_port(&ca, &[local, local], names.clone()).await;
    assert_eq!(twice.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
    let none = Receiver::start_on_same_port(&ca, &[], names).await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn closed_port_refuses_connections_and_keeps_the_port() {
    let closed = ClosedPort::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    assert_eq!(closed.addr(), SocketAddr::from(([127, 0, 0, 1], closed.port())));
    assert_ne!(closed.port(), 0);
    // Refused at once by a reset, not left to time out.
    let started = std::time::Instant::now();
    let err = TcpStream::connect(closed.addr()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Nobody else can start listening there while it is held.
    let err = std::net::TcpListener::bind(closed.addr()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
}
