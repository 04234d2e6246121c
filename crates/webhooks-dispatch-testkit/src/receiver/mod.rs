//! Real HTTPS webhook receivers on loopback.
//!
//! A [`Receiver`] terminates TLS with a leaf certificate from a [`TestCa`],
//! serves HTTP/1.1 and HTTP/2 (chosen by ALPN), records every request and
//! answers from a script of [`Reply`]s, including misbehaving ones (hanging,
//! trickling, endless bodies) for testing the sender's timeouts and limits.
//! [`ClosedPort`] is the opposite: a loopback port that refuses connections.

mod ca;
mod closed;
mod conn;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use ca::TestCa;
pub use closed::ClosedPort;

/// Pending connections the kernel queues before the receiver accepts them (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Ports [`Receiver::start_on_same_port`] tries before giving up, each chosen afresh by the OS.
const SAME_PORT_ATTEMPTS: usize = 20;

/// Where a [`Receiver`] listens and which names its certificate carries.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// Address to bind. Default 127.0.0.1.
    pub bind: IpAddr,
    /// Port to bind; 0 (the default) lets the OS pick a free one.
    ///
    /// A fixed port is racy: another process may hold it on this address (or take it between the test
    /// learning it and binding it), and the start then fails with `AddrInUse`. For receivers on several
    /// addresses sharing one port (so that DNS can move a name between them) use
    /// [`Receiver::start_on_same_port`], which retries with a fresh port instead.
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
    /// Wait this long, then answer this status with an empty body (a slow endpoint that fails).
    DelayedStatus(Duration, u16),
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
        let tls = tls_config(ca, &opts.names)?;
        let listener = listen(SocketAddr::new(opts.bind, opts.port))?;
        Receiver::serve(listener, tls)
    }

    /// Starts one receiver per address in `binds`, all on the same port (chosen by the OS for the first
    /// address, retried with a fresh port when another address has it taken), each with a certificate for
    /// `names`. Receivers come back in the order of `binds`; none is started unless all are. Must be called
    /// inside a tokio runtime.
    ///
    /// This is how two receivers serve one URL for tests in which DNS moves a name between addresses,
    /// without the race of a fixed [`ReceiverOptions::port`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` if an address appears twice; `AddrInUse` if every one of the attempted ports was
    /// taken on some address; any other bind error (such as an address this machine does not have) at once.
    ///
    /// # Panics
    ///
    /// If a name in `names` is not a valid DNS name or IP address.
    pub async fn start_on_same_port(
        ca: &TestCa,
        binds: &[IpAddr],
        names: Vec<String>,
    ) -> io::Result<Vec<Receiver>> {
        if let Some(twice) = binds
            .iter()
            .enumerate()
            .find_map(|(i, ip)| binds[..i].contains(ip).then_some(ip))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{twice} appears twice; one port can be bound only once per address"),
            ));
        }
        let tls = tls_config(ca, &names)?;
        let listeners = bind_same_port(binds, |addr| {
            let listener = listen(addr)?;
            let port = listener.local_addr()?.port();
            Ok((listener, port))
        })?;
        listeners
            .into_iter()
            .map(|listener| Receiver::serve(listener, tls.clone()))
            .collect()
    }

    /// Serves TLS on an already bound `listener`; its tasks run until the returned receiver is dropped.
    fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> io::Result<Receiver> {
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(());
        let shared = Arc::new(Shared::new());
        let acceptor = TlsAcceptor::from(tls);
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
    /// open from the arrival of its head until its complete response is handed
    /// over for sending (a streamed body: until it has been sent or
    /// abandoned), so it never overlaps a request the client could only send
    /// after reading this response.
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

/// The receivers' TLS settings: a new leaf from `ca` for `names`, ALPN offering h2 before HTTP/1.1.
///
/// # Panics
///
/// If a name is not a valid DNS name or IP address.
fn tls_config(ca: &TestCa, names: &[String]) -> io::Result<Arc<rustls::ServerConfig>> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (chain, key) = ca.leaf(&names);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Binds every address in `binds` to one port with `bind` (which returns what it bound and its port): a port
/// chosen by the OS for the first address, then that port on the others; when one of them has it taken,
/// drops what was bound and starts over with a fresh port, up to [`SAME_PORT_ATTEMPTS`] times.
fn bind_same_port<L>(
    binds: &[IpAddr],
    mut bind: impl FnMut(SocketAddr) -> io::Result<(L, u16)>,
) -> io::Result<Vec<L>> {
    let Some((&first, others)) = binds.split_first() else {
        return Ok(Vec::new());
    };
    let mut last_taken = None;
    'attempts: for _ in 0..SAME_PORT_ATTEMPTS {
        let (bound, port) = bind(SocketAddr::new(first, 0))?;
        let mut all = vec![bound];
        for &ip in others {
            match bind(SocketAddr::new(ip, port)) {
                Ok((bound, _)) => all.push(bound),
                // Dropping `all` frees the port on the addresses bound so far.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    last_taken = Some(e);
                    continue 'attempts;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(all);
    }
    let e = last_taken.expect("only a taken port leads to another attempt");
    Err(io::Error::new(
        e.kind(),
        format!("no port was free on all of {binds:?} in {SAME_PORT_ATTEMPTS} attempts (last: {e})"),
    ))
}

/// A listening socket on `addr` (a fresh port when its port is 0). Needs a tokio runtime.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(addr)?;
    // A sender without keep-alive opens hundreds of connections at once under load; with the usual
    // backlog of 128 the kernel drops the excess SYNs and each of those clients stalls for a 1 s
    // retransmit, which would be measured as the sender's latency.
    socket.listen(LISTEN_BACKLOG)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::{bind_same_port, SAME_PORT_ATTEMPTS};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    /// A pretend kernel: hands out ports 1000, 1001, … for port 0 and refuses the addresses in `taken`.
    fn fake(taken: HashSet<SocketAddr>) -> impl FnMut(SocketAddr) -> io::Result<(SocketAddr, u16)> {
        let mut next = 1000;
        move |mut addr| {
            if addr.port() == 0 {
                addr.set_port(next);
                next += 1;
            }
            if taken.contains(&addr) {
                Err(io::ErrorKind::AddrInUse.into())
            } else {
                Ok((addr, addr.port()))
            }
        }
    }

    #[test]
    fn a_port_taken_on_another_address_is_retried_with_a_fresh_one() {
        let taken = HashSet::from([SocketAddr::new(B, 1000), SocketAddr::new(C, 1001)]);
        let bound = bind_same_port(&[A, B, C], fake(taken)).unwrap();
        assert_eq!(bound, [A, B, C].map(|ip| SocketAddr::new(ip, 1002)));
    }

    #[test]
    fn other_bind_errors_are_not_retried_and_attempts_are_bounded() {
        let mut calls = 0;
        let err = bind_same_port(&[A, B], |addr| {
            calls += 1;
            if addr.ip() == B {
                Err(io::Error::from(io::ErrorKind::AddrNotAvailable))
            } else {
                Ok(((), 1000))
            }
        })
        .unwrap_err();
        assert_eq!((err.kind(), calls), (io::ErrorKind::AddrNotAvailable, 2));

        let always_taken = (1000..1000 + SAME_PORT_ATTEMPTS as u16).map(|port| SocketAddr::new(B, port));
        let err = bind_same_port(&[A, B], fake(always_taken.collect())).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let attempts = format!("{SAME_PORT_ATTEMPTS} attempts");
        assert!(err.to_string().contains(&attempts), "{err}");
    }
}
