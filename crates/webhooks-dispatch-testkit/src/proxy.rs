//! A loopback TCP proxy whose connections a test can cut, to simulate a database (or any TCP service)
//! going down and coming back without touching the real server.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use webhooks_dispatch_testkit::proxy::TcpProxy;
//! let url = webhooks_dispatch_testkit::fresh_database().await;
//! let proxy = TcpProxy::in_front_of(&url).await?;
//! let through_proxy = proxy.via(&url); // give this URL to the code under test
//! proxy.cut(); // every connection dies, new ones are closed at once
//! proxy.restore(); // new connections work again
//! # Ok(()) }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy is currently doing, shared with every task through a watch channel.
#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// An outage is in progress: new connections are closed as soon as they are accepted.
    down: bool,
    /// How many times [`TcpProxy::cut`] was called. A forwarded connection remembers the value it was
    /// accepted under and ends as soon as it changes, which is how one `cut` reaches every live connection.
    cuts: u64,
}

/// Counters the handle reads and the tasks update.
struct Counters {
    accepted: AtomicUsize,
    live: watch::Sender<usize>,
}

/// A running proxy on 127.0.0.1. Dropping it stops accepting and closes every forwarded connection.
pub struct TcpProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    /// Every task races its work against changes of this channel; dropping the sender (with the handle)
    /// ends them all, the same shutdown pattern as the receiver's.
    state: watch::Sender<State>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1:0 and forwards every accepted connection to `target`. Must be called inside a
    /// tokio runtime, which then runs the proxy's tasks.
    pub async fn start(target: SocketAddr) -> io::Result<TcpProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters {
            accepted: AtomicUsize::new(0),
            live: watch::channel(0).0,
        });
        let (state, state_rx) = watch::channel(State::default());
        tokio::spawn(accept_loop(listener, target, counters.clone(), state_rx));
        Ok(TcpProxy {
            addr,
            counters,
            state,
        })
    }

    /// A proxy in front of the server a `postgres://host:port/…` URL names (port 5432 when absent).
    ///
    /// # Panics
    ///
    /// If `url` is not a URL with a host.
    pub async fn in_front_of(url: &str) -> io::Result<TcpProxy> {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("not a URL ({e})"));
        let host = parsed.host_str().expect("the URL names a host");
        let port = parsed.port().unwrap_or(5432);
        // IPv6 literals come bracketed from the URL; lookup_host wants them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let target = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the URL's host has no address"))?;
        TcpProxy::start(target).await
    }

    /// The listening address (always on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` with its host and port replaced by this proxy's, so a client given it connects through the
    /// proxy; everything else (user, password, database, query) is kept.
    ///
    /// # Panics
    ///
    /// If `url` is not a URL with a host.
    pub fn via(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("not a URL ({e})"));
        parsed
            .set_host(Some("127.0.0.1"))
            .unwrap_or_else(|e| panic!("the URL cannot take a host ({e})"));
        parsed
            .set_port(Some(self.port()))
            .unwrap_or_else(|()| panic!("the URL cannot take a port"));
        parsed.into()
    }

    /// Simulates an outage: closes every live forwarded connection at once (both directions) and, until
    /// [`restore`](Self::restore), closes each newly accepted connection immediately (the listener stays
    /// bound so the port cannot be taken).
    pub fn cut(&self) {
        self.state.send_modify(|s| {
            s.down = true;
            s.cuts += 1;
        });
    }

    /// Ends the outage: new connections are forwarded again.
    pub fn restore(&self) {
        self.state.send_modify(|s| s.down = false);
    }

    /// Connections accepted so far (including refused ones during an outage).
    pub fn connections_accepted(&self) -> usize {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently being forwarded.
    pub fn live_connections(&self) -> usize {
        *self.counters.live.borrow()
    }

    /// Waits until exactly `n` connections are being forwarded; `false` on timeout. After
    /// [`cut`](Self::cut), `wait_live(0, …)` tells when every connection has been closed.
    pub async fn wait_live(&self, n: usize, timeout: Duration) -> bool {
        let mut live = self.counters.live.subscribe();
        let reached = tokio::time::timeout(timeout, live.wait_for(|&c| c == n)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    counters: Arc<Counters>,
    mut state: watch::Receiver<State>,
) {
    loop {
        let client = tokio::select! {
            accepted = listener.accept() => accepted,
            // Only errs, once the handle (the sender) is gone.
            Err(_) = state.changed() => return,
        };
        let Ok((client, _)) = client else {
            // Typically EMFILE; back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        let now = *state.borrow_and_update();
        if now.down {
            // Dropping closes it: the client sees its server vanish right after connecting.
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, target, counters.clone(), state.clone(), now.cuts));
    }
}

/// Pipes one connection both ways until either side closes it, the proxy is cut, or the proxy is dropped.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    counters: Arc<Counters>,
    mut state: watch::Receiver<State>,
    accepted_under: u64,
) {
    // Ends when a cut happens after this connection was accepted, or when the handle is dropped.
    let cut = async {
        let _ = state.wait_for(|s| s.cuts != accepted_under).await;
    };
    tokio::pin!(cut);
    let mut server = tokio::select! {
        connected = TcpStream::connect(target) => match connected {
            Ok(server) => server,
            Err(_) => return,
        },
        () = &mut cut => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    counters.live.send_modify(|n| *n += 1);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        () = &mut cut => {}
    }
    // Counted down before the sockets close, so a client that observes the close also observes the count.
    counters.live.send_modify(|n| *n -= 1);
    drop(client);
    drop(server);
}
