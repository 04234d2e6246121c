//! The loopback TCP proxy: forwarding, outages (cut), recovery (restore), shutdown on drop.
//!
//! The target is a small echo server here, so the tests see both ends of every forwarded connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use webhooks_dispatch_testkit::proxy::TcpProxy;

/// Longest wait for something that must happen; tests finish far sooner when it does.
const PATIENCE: Duration = Duration::from_secs(10);

/// An echo server on 127.0.0.1:0. Each connection it accepts is reported on the first channel, and its end
/// (the peer closed it: EOF or reset) on the second.
async fn echo_server() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (opened_tx, opened) = mpsc::unbounded_channel();
    let (closed_tx, closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = opened_tx.send(());
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = closed_tx.send(());
            });
        }
    });
    (addr, opened, closed)
}

/// Sends `text` and expects it back.
async fn round_trip(conn: &mut TcpStream, text: &[u8]) {
    conn.write_all(text).await.unwrap();
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(PATIENCE, conn.read_exact(&mut back))
        .await
        .expect("echo within the deadline")
        .expect("echo");
    assert_eq!(back, text);
}

/// Waits until the peer closes `conn`; panics if it stays open past the deadline.
async fn assert_closed(conn: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(PATIENCE, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("read {n} bytes from a connection that should be closed"),
        Err(_) => panic!("the connection is still open after {PATIENCE:?}"),
    }
}

async fn next(events: &mut mpsc::UnboundedReceiver<()>, what: &str) {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {PATIENCE:?}"))
        .expect("echo server running");
}

// Catches: a proxy that does not forward, forwards one way only, or miscounts its connections.
#[tokio::test]
async fn forwards_both_ways_and_counts_connections() {
    let (target, mut opened, mut closed) = echo_server().await;
    let proxy = TcpProxy::start(target).await.unwrap();
    assert!(proxy.addr().ip().is_loopback());
    assert_eq!(proxy.addr().port(), proxy.port());

    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"hello through the proxy").await;
    next(&mut opened, "upstream connection").await;
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.live_connections(), 1);

    // A client that hangs up is no longer live, and its upstream connection is closed too.
    drop(client);
    next(&mut closed, "upstream close").await;
    assert!(
        proxy.wait_live(0, PATIENCE).await,
        "still {} live",
        proxy.live_connections()
    );
}

// Catches: a cut that only refuses new connections and leaves established ones (such as pooled database
// connections) working, or closes only the client side.
#[tokio::test]
async fn cut_closes_every_live_connection_in_both_directions() {
    let (target, mut opened, mut closed) = echo_server().await;
    let proxy = TcpProxy::start(target).await.unwrap();
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut a, b"a").await;
    round_trip(&mut b, b"b").await;
    for _ in 0..2 {
        next(&mut opened, "upstream connection").await;
    }
    assert_eq!(proxy.live_connections(), 2);

    proxy.cut();
    assert_closed(&mut a).await;
    assert_closed(&mut b).await;
    for _ in 0..2 {
        next(&mut closed, "upstream close").await;
    }
    assert_eq!(proxy.live_connections(), 0);
}

// Catches: an outage that unbinds the port (another process could take it), forwards anyway, or leaves
// refused connections hanging open instead of closing them.
#[tokio::test]
async fn connections_during_an_outage_are_accepted_then_closed() {
    let (target, mut opened, _closed) = echo_server().await;
    let proxy = TcpProxy::start(target).await.unwrap();
    proxy.cut();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(proxy.addr())
            .await
            .expect("the port stays bound during an outage");
        assert_closed(&mut conn).await;
    }
    assert_eq!(proxy.connections_accepted(), 3);
    assert_eq!(proxy.live_connections(), 0);
    assert!(opened.try_recv().is_err(), "nothing reached the target");
    let taken = std::net::TcpListener::bind(proxy.addr());
    assert!(
        taken.is_err(),
        "the proxy's port could be taken during the outage"
    );
}

// Catches: a restore that does not end the outage, or a proxy whose cut is permanent.
#[tokio::test]
async fn restore_forwards_new_connections_again() {
    let (target, mut opened, _closed) = echo_server().await;
    let proxy = TcpProxy::start(target).await.unwrap();
    proxy.cut();
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_closed(&mut refused).await;

    proxy.restore();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"back again").await;
    next(&mut opened, "upstream connection").await;
    assert_eq!(proxy.live_connections(), 1);
    assert_eq!(proxy.connections_accepted(), 2);

    // Connections made after the restore survive until the next cut, and that cut reaches them.
    proxy.cut();
    assert_closed(&mut client).await;
}

// Catches: a dropped proxy whose tasks keep forwarding, or whose port stays open.
#[tokio::test]
async fn dropping_the_proxy_closes_its_connections_and_its_port() {
    let (target, _opened, mut closed) = echo_server().await;
    let proxy = TcpProxy::start(target).await.unwrap();
    let addr = proxy.addr();
    let mut client = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut client, b"x").await;

    drop(proxy);
    assert_closed(&mut client).await;
    next(&mut closed, "upstream close").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    // The accept loop ends on its next poll after the drop; until then the kernel may still accept.
    loop {
        match TcpStream::connect(addr).await {
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                break;
            }
            Ok(mut late) => assert_closed(&mut late).await,
        }
        assert!(tokio::time::Instant::now() < deadline, "the port still accepts");
        tokio::task::yield_now().await;
    }
}

// Catches: a URL rewrite that drops the credentials, database or query, or keeps the old host or port.
#[tokio::test]
async fn via_and_in_front_of_point_a_database_url_through_the_proxy() {
    let (target, _opened, _closed) = echo_server().await;
    let url = format!(
        "postgres://app:pw@127.0.0.1:{}/wdt_1?sslmode=disable",
        target.port()
    );
    let proxy = TcpProxy::in_front_of(&url).await.unwrap();
    assert_eq!(
        proxy.via(&url),
        format!(
            "postgres://app:pw@127.0.0.1:{}/wdt_1?sslmode=disable",
            proxy.port()
        )
    );
    assert_eq!(
        proxy.via("postgres://localhost/db"),
        format!("postgres://127.0.0.1:{}/db", proxy.port())
    );
    // in_front_of really targets the URL's server: bytes come back from the echo server.
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"ping").await;
}
