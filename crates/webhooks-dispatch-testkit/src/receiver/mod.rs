//! Real HTTPS webhook receivers on loopback.
//!
//! A [`Receiver`] terminates TLS with a leaf certificate from a [`TestCa`],
//! serves HTTP/1.1 and HTTP/2 (chosen by ALPN), records every request and
//! answers from a script of [`Reply`]s, including misbehaving ones (hanging,
//! trickling, endless bodies) for testing the sender's timeouts and limits.

mod ca;
mod conn;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use ca::TestCa;

/// Pending connections the kernel queues before the receiver accepts them (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Where a [`Receiver`] listens and which names its certificate carries.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Address to bind. Default 127.0.0.1.
    pub bind: IpAddr,
    /// Port to bind; 0 (the default) lets the OS pick a free one. A fixed port lets two receivers on
    /// different loopback addresses serve the same URL, for tests in which DNS moves a name between them.
    pub port: u16,
    /// Subject alternative names of the served certificate (IP SANs for
    /// strings that parse as IPs). Default: `receiver.test`, `localhost`,
    /// `127.0.0.1`.
    pub names: Vec<String>,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            names: ["receiver.test", "localhost", "127.0.0.1"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

/// How the receiver answers one request; the default is 200 with body `ok`.
///
/// The request body is always read in full and recorded before the reply
/// starts.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A complete response. An out-of-range status or an invalid header makes
    /// the receiver drop the connection instead.
    Status {
        /// Status code.
        status: u16,
        /// Response headers, in order.
        headers: Vec<(String, String)>,
        /// Response body (sent with a `content-length`).
        body: Vec<u8>,
    },
    /// Accept and never send response headers, until the client gives up.
    Hang,
    /// Send the status line and then an endless header one byte at a time,
    /// `every` apart, each byte flushed in its own TLS record — for testing
    /// the sender's absolute deadline against per-read timeouts. HTTP/1.x
    /// only: HTTP/2 frames are written by hyper, so on an h2 connection this
    /// behaves like [`Reply::Hang`].
    Trickle {
        /// Pause between bytes.
        every: Duration,
    },
    /// 200 with an endless chunked body (16 KiB every 10 ms), for testing
    /// the sender's bounded body read.
    EndlessBody,
    /// Wait this long, then answer 200 `ok`.
    Delayed(Duration),
}

impl Reply {
    /// A reply with this status, no extra headers and an empty body.
    pub fn status(status: u16) -> Reply {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl Default for Reply {
    fn default() -> Self {
        Reply::Status {
            status: 200,
            headers: Vec::new(),
            body: b"ok".to_vec(),
        }
    }
}

/// Everything the receiver saw for one request.
#[derive(Clone, Debug)]
pub struct Received {
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Path plus query string, if any (`/hook?x=1`).
    pub path: String,
    /// Request headers as received (HTTP/2 pseudo-headers excluded).
    pub headers: http::HeaderMap,
    /// The complete request body.
    pub body: Bytes,
    /// Server name the client sent in the TLS handshake (none for IP targets).
    pub sni: Option<String>,
    /// `HTTP_11` or `HTTP_2` in practice.
    pub http_version: http::Version,
    /// When the request head arrived.
    pub at: Instant,
}

/// A running HTTPS receiver. Dropping it stops accepting and ends all of its
/// connections and request tasks.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Never sent on: every task of this receiver races its work against
    /// this sender being dropped.
    _shutdown: watch::Sender<()>,
}

impl Receiver {
    /// Binds `opts.bind:opts.port` (a fresh port when 0) and starts serving with a new leaf certificate
    /// from `ca` for `opts.names`. Must be called inside a tokio runtime,
    /// which then runs the receiver's tasks.
    ///
    /// # Panics
    ///
    /// If a name in `opts.names` is not a valid DNS name or IP address.
    pub async fn start(ca: &TestCa, opts: ReceiverOptions) -> io::Result<Receiver> {
        let names: Vec<&str> = opts.names.iter().map(String::as_str).collect();
        let (chain, key) = ca.leaf(&names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(io::Error::other)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let socket = match opts.bind {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(opts.bind, opts.port))?;
        // A sender without keep-alive opens hundreds of connections at once under load; with the usual
        // backlog of 128 the kernel drops the excess SYNs and each of those clients stalls for a 1 s
        // retransmit, which would be measured as the sender's latency.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared::new());
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let exec = conn::Exec::new(shutdown_rx);
        exec.spawn(conn::accept_loop(
            listener,
            acceptor,
            shared.clone(),
            exec.clone(),
        ));
        Ok(Receiver {
            addr,
            shared,
            _shutdown: shutdown,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the reply used once the script queue is empty.
    pub fn set_default_reply(&self, reply: Reply) {
        lock(&self.shared.replies).default = reply;
    }

    /// Appends replies to the script queue. Each request, in arrival order,
    /// takes the next scripted reply; when the queue is empty it gets the
    /// default reply.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.shared.replies).script.extend(replies);
    }

    /// Snapshot of all requests received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        lock(&self.shared.received).len()
    }

    /// Waits until at least `n` requests have been received; `false` on
    /// timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let mut count = self.shared.count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|&c| c >= n)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// TCP connections accepted, counted before (and regardless of) the TLS
    /// handshake — shows whether the sender reuses connections.
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Highest number of requests open at the same time so far. A request is
    /// open from the arrival of its head until its response body has been
    /// sent or abandoned.
    pub fn max_in_flight(&self) -> usize {
        lock(&self.shared.in_flight).total.max
    }

    /// Like [`max_in_flight`](Self::max_in_flight), counting only requests
    /// whose path (with query, as in [`Received::path`]) equals `path`.
    pub fn max_in_flight_for(&self, path: &str) -> usize {
        lock(&self.shared.in_flight)
            .per_path
            .get(path)
            .map_or(0, |gauge| gauge.max)
    }
}

/// Locks ignoring poisoning: the guarded data stays consistent even if a
/// holder panicked, since every critical section is a single update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the handle and all connection tasks.
struct Shared {
    replies: Mutex<Replies>,
    received: Mutex<Vec<Received>>,
    /// Mirrors `received.len()` so `wait_for` can sleep until it grows.
    count: watch::Sender<usize>,
    connections: AtomicUsize,
    in_flight: Mutex<InFlight>,
}

struct Replies {
    script: VecDeque<Reply>,
    default: Reply,
}

#[derive(Default)]
struct InFlight {
    total: Gauge,
    per_path: HashMap<String, Gauge>,
}

#[derive(Default, Clone, Copy)]
struct Gauge {
    now: usize,
    max: usize,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            replies: Mutex::new(Replies {
                script: VecDeque::new(),
                default: Reply::default(),
            }),
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            connections: AtomicUsize::new(0),
            in_flight: Mutex::new(InFlight::default()),
        }
    }

    fn next_reply(&self) -> Reply {
        let mut replies = lock(&self.replies);
        match replies.script.pop_front() {
            Some(reply) => reply,
            None => replies.default.clone(),
        }
    }

    fn record(&self, received: Received) {
        lock(&self.received).push(received);
        self.count.send_modify(|count| *count += 1);
    }
}

/// Counts one open request from creation until drop.
struct InFlightGuard {
    shared: Arc<Shared>,
    path: String,
}

impl InFlightGuard {
    fn enter(shared: &Arc<Shared>, path: &str) -> InFlightGuard {
        let mut in_flight = lock(&shared.in_flight);
        let InFlight { total, per_path } = &mut *in_flight;
        for gauge in [total, per_path.entry(path.to_owned()).or_default()] {
            gauge.now += 1;
            gauge.max = gauge.max.max(gauge.now);
        }
        InFlightGuard {
            shared: shared.clone(),
            path: path.to_owned(),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.shared.in_flight);
        in_flight.total.now -= 1;
        if let Some(gauge) = in_flight.per_path.get_mut(&self.path) {
            gauge.now -= 1;
        }
    }
}
