//! Keep-alive connections to webhook endpoints, HTTP/1.1 and HTTP/2.
//!
//! Security reasoning:
//! - The key is (TLS server name, vetted socket address). The server name is part of it because the TLS
//!   session authenticated exactly that name: a connection verified for `a.example` must never carry a
//!   request for `b.example`, even when both names point at the same address. The address is part of it
//!   because reuse must obey the same rule as a fresh connect — only ever talk to an address in the
//!   *current* vetted answer. The caller passes that answer to [`Pool::checkout`], which only looks at keys
//!   built from it, so a pooled connection to an address DNS no longer returns (or that is now refused) is
//!   simply never found, and a refused answer never reaches the pool at all.
//! - Every connection's tasks (hyper's connection future, HTTP/2 stream and ping tasks) run on a
//!   [`ConnExec`] tied to a [`Driver`]; dropping the driver ends all of them and closes the socket, so a
//!   hostile server cannot keep a task or a connection alive past the attempt that gave up on it.
//! - An HTTP/1.1 connection is checked in by the caller only after the response was read to its end within
//!   the deadline; anything else drops it (and so its driver). HTTP/2 connections are shared: giving up on
//!   a response only resets that stream.
//! - Idle connections are bounded per key and in total, and expire after the idle timeout (closed by the
//!   next pool operation after it elapses, or when the dispatcher is dropped).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::h2::{self, Windows};
use super::Failure;

/// Request body type for every connection.
pub(super) type ReqBody = Full<Bytes>;

/// Most connections held by the pool at once (idle HTTP/1.1 plus shared HTTP/2), across all keys, so that
/// many distinct endpoints cannot exhaust file descriptors through idle connections.
const MAX_POOLED: usize = 1024;
/// How often, at most, the pool scans for expired and closed connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Pool settings, from the dispatcher builder.
pub(super) struct PoolOptions {
    /// How long an unused connection is kept; zero disables reuse.
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per key; zero disables reuse.
    pub max_idle_per_key: usize,
    /// Whether `h2` is offered in ALPN (the TLS connector must agree).
    pub http2: bool,
    /// HTTP/2 flow-control windows.
    pub h2_windows: Windows,
    /// Longest time for TCP connect, and again for the TLS and HTTP handshakes, of a new connection.
    pub connect_timeout: Duration,
}

/// A pool key: the TLS server name the connection authenticated and the vetted address it went to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    server_name: String,
    addr: SocketAddr,
}

impl Key {
    fn new(server_name: &str, addr: SocketAddr) -> Key {
        Key {
            server_name: server_name.to_owned(),
            addr,
        }
    }
}

/// Owns a connection's lifetime: dropping it stops every task running on its [`ConnExec`], which drops the
/// TLS stream and closes the socket.
pub(super) struct Driver {
    _stop: watch::Sender<()>,
}

/// Spawns a connection's tasks so that each one ends when the connection's [`Driver`] is dropped. Also
/// hyper's HTTP/2 executor, so the stream and ping tasks hyper spawns are cut off along with the connection.
#[derive(Clone)]
struct ConnExec(watch::Receiver<()>);

fn driver() -> (Driver, ConnExec) {
    let (stop, stopped) = watch::channel(());
    (Driver { _stop: stop }, ConnExec(stopped))
}

impl ConnExec {
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut stopped = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                // Nothing is ever sent: `changed` only returns, with an error, once the Driver is gone.
                _ = async { while stopped.changed().await.is_ok() {} } => {}
            }
        });
    }
}

impl<F> hyper::rt::Executor<F> for ConnExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            let _ = fut.await;
        });
    }
}

/// A connection checked out for one request.
pub(super) struct Conn {
    key: Key,
    reused: bool,
    proto: Proto,
}

enum Proto {
    /// Exclusively ours until checked in; dropping it closes the connection.
    H1 {
        sender: http1::SendRequest<ReqBody>,
        driver: Driver,
    },
    /// Shared with the pool and other attempts; the connection lives while any holder keeps the driver.
    H2 {
        sender: http2::SendRequest<ReqBody>,
        driver: Arc<Driver>,
    },
}

/// Why [`Conn::send`] failed.
pub(super) enum SendFailed {
    /// The request never left (the connection was already closed): sending it elsewhere is safe.
    Unsent,
    /// The connection failed after the request may have been written.
    Failed,
}

impl Conn {
    /// Whether this connection came from the pool rather than being opened for this attempt.
    pub(super) fn reused(&self) -> bool {
        self.reused
    }

    /// Whether the connection speaks HTTP/2 (decides the request's URI form).
    pub(super) fn is_http2(&self) -> bool {
        matches!(self.proto, Proto::H2 { .. })
    }

    /// Sends the request and waits for the response head.
    pub(super) async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, SendFailed> {
        let sent = match &mut self.proto {
            Proto::H1 { sender, .. } => sender.try_send_request(req).await,
            Proto::H2 { sender, .. } => sender.try_send_request(req).await,
        };
        sent.map_err(|e| match e.message() {
            Some(_) => SendFailed::Unsent,
            None => SendFailed::Failed,
        })
    }

    /// Waits until a pooled connection can take a request; `false` if it turned out to be closed.
    async fn ready(&mut self) -> bool {
        match &mut self.proto {
            Proto::H1 { sender, .. } => sender.ready().await.is_ok(),
            Proto::H2 { sender, .. } => !sender.is_closed(),
        }
    }
}

struct IdleH1 {
    sender: http1::SendRequest<ReqBody>,
    driver: Driver,
    since: Instant,
}

struct SharedH2 {
    sender: http2::SendRequest<ReqBody>,
    driver: Arc<Driver>,
    last_used: Instant,
}

#[derive(Default)]
struct Slot {
    h2: Option<SharedH2>,
    /// A stack: the most recently used (warmest) connection is taken first.
    idle: Vec<IdleH1>,
    /// The last connection for this key negotiated HTTP/1.1, so concurrent attempts need not wait for one
    /// another's connect in the hope of sharing an HTTP/2 connection.
    speaks_h1: bool,
    /// Held while opening a connection that may turn out to be HTTP/2, so concurrent attempts share it.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

struct State {
    slots: HashMap<Key, Slot>,
    /// Idle HTTP/1.1 plus shared HTTP/2 connections held.
    pooled: usize,
    next_sweep: Instant,
}

/// The connection pool. One per dispatcher configuration; dropping it closes every pooled connection.
pub(super) struct Pool {
    tls: TlsConnector,
    opts: PoolOptions,
    state: Mutex<State>,
}

/// Why opening a connection to one address failed.
enum Dial {
    /// TCP connect failed: the next vetted address may be tried.
    Unreachable,
    /// A later step failed: the attempt ends with this.
    Failed(Failure),
}

impl Pool {
    /// A pool dialing with `tls`, whose ALPN list must offer `h2` exactly when `opts.http2` is set.
    pub(super) fn new(tls: TlsConnector, opts: PoolOptions) -> Pool {
        Pool {
            tls,
            opts,
            state: Mutex::new(State {
                slots: HashMap::new(),
                pooled: 0,
                next_sweep: Instant::now(),
            }),
        }
    }

    fn reuse(&self) -> bool {
        !self.opts.idle_timeout.is_zero() && self.opts.max_idle_per_key > 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections never await and leave the maps consistent at every step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pooled connection for `server_name` to one of `addrs`, which must be the *current* vetted answer:
    /// only keys built from it are looked at, so nothing else can be reused.
    pub(super) async fn checkout(&self, server_name: &str, addrs: &[SocketAddr]) -> Option<Conn> {
        if !self.reuse() {
            return None;
        }
        loop {
            let mut conn = self.take(server_name, addrs)?;
            if conn.ready().await {
                return Some(conn);
            }
            // Closed while idle: drop it and look again.
        }
    }

    fn take(&self, server_name: &str, addrs: &[SocketAddr]) -> Option<Conn> {
        let now = Instant::now();
        let timeout = self.opts.idle_timeout;
        let mut state = self.lock();
        state.maybe_sweep(now, timeout);
        let State { slots, pooled, .. } = &mut *state;
        for &addr in addrs {
            let key = Key::new(server_name, addr);
            let Some(slot) = slots.get_mut(&key) else {
                continue;
            };
            if let Some(conn) = take_h2(slot, pooled, &key, now, timeout) {
                return Some(conn);
            }
            while let Some(idle) = slot.idle.pop() {
                *pooled = pooled.saturating_sub(1);
                if !idle.sender.is_closed() && now.duration_since(idle.since) < timeout {
                    let proto = Proto::H1 {
                        sender: idle.sender,
                        driver: idle.driver,
                    };
                    return Some(Conn {
                        key,
                        reused: true,
                        proto,
                    });
                }
            }
        }
        None
    }

    /// Opens a connection to the first of `addrs` (the current vetted answer) that accepts TCP, with TLS for
    /// `sni`. HTTP/2 connections are shared through the pool at once.
    pub(super) async fn connect(
        &self,
        server_name: &str,
        sni: &ServerName<'static>,
        addrs: &[SocketAddr],
    ) -> Result<Conn, Failure> {
        for &addr in addrs {
            match self.connect_to(Key::new(server_name, addr), sni).await {
                Ok(conn) => return Ok(conn),
                Err(Dial::Unreachable) => continue,
                Err(Dial::Failed(failure)) => return Err(failure),
            }
        }
        Err(Failure::Network("connection failed"))
    }

    async fn connect_to(&self, key: Key, sni: &ServerName<'static>) -> Result<Conn, Dial> {
        // Concurrent attempts to a key wait for one another's connect, so that an HTTP/2 endpoint gets one
        // connection rather than one per attempt. Once the key is known to speak HTTP/1.1 they stop waiting.
        let _turn = match self.connect_lock(&key) {
            Some(lock) => {
                let turn = lock.lock_owned().await;
                match self.after_wait(&key) {
                    AfterWait::Shared(conn) => return Ok(conn),
                    AfterWait::SpeaksH1 => None,
                    AfterWait::Connect => Some(turn),
                }
            }
            None => None,
        };
        // A shorter bound than the attempt's deadline for getting a connection at all: an address that drops
        // SYNs moves on to the next vetted address, and a receiver that never completes TLS (a tarpit) fails
        // fast as unreachable, which backs off its endpoint, instead of holding a slot for the whole deadline.
        let limit = self.opts.connect_timeout;
        let tcp = match tokio::time::timeout(limit, TcpStream::connect(key.addr)).await {
            Ok(Ok(tcp)) => tcp,
            _ => return Err(Dial::Unreachable),
        };
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(limit, self.tls.connect(sni.clone(), tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(_)) => return Err(Dial::Failed(Failure::Network("tls handshake failed"))),
            Err(_) => return Err(Dial::Failed(Failure::Network("tls handshake timed out"))),
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let io = TokioIo::new(tls);
        let handshake_failed = |_| Dial::Failed(Failure::Network("http handshake failed"));
        // Created before the handshake, so that whatever hyper spawns during it is tied to the driver too.
        let (driver, exec) = driver();
        let proto = if h2 {
            let (sender, conn) = h2::builder(exec.clone(), self.opts.h2_windows)
                .handshake(io)
                .await
                .map_err(handshake_failed)?;
            exec.spawn(async move {
                let _ = conn.await;
            });
            let driver = Arc::new(driver);
            self.share_h2(&key, &sender, &driver);
            Proto::H2 { sender, driver }
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(handshake_failed)?;
            exec.spawn(async move {
                let _ = conn.await;
            });
            self.note_h1(&key);
            Proto::H1 { sender, driver }
        };
        Ok(Conn {
            key,
            reused: false,
            proto,
        })
    }

    fn connect_lock(&self, key: &Key) -> Option<Arc<tokio::sync::Mutex<()>>> {
        if !self.opts.http2 || !self.reuse() {
            return None;
        }
        let mut state = self.lock();
        let slot = state.slots.entry(key.clone()).or_default();
        (!slot.speaks_h1).then(|| slot.connecting.clone())
    }

    fn after_wait(&self, key: &Key) -> AfterWait {
        let now = Instant::now();
        let mut state = self.lock();
        let State { slots, pooled, .. } = &mut *state;
        let Some(slot) = slots.get_mut(key) else {
            return AfterWait::Connect;
        };
        if let Some(conn) = take_h2(slot, pooled, key, now, self.opts.idle_timeout) {
            return AfterWait::Shared(conn);
        }
        if slot.speaks_h1 {
            AfterWait::SpeaksH1
        } else {
            AfterWait::Connect
        }
    }

    fn share_h2(&self, key: &Key, sender: &http2::SendRequest<ReqBody>, driver: &Arc<Driver>) {
        if !self.reuse() {
            return;
        }
        let mut state = self.lock();
        let State { slots, pooled, .. } = &mut *state;
        let slot = slots.entry(key.clone()).or_default();
        slot.speaks_h1 = false;
        match &slot.h2 {
            // Another live connection is already shared (possible only after a protocol switch); ours stays
            // private to this attempt and closes after it.
            Some(existing) if !existing.sender.is_closed() => {}
            Some(_) => {
                slot.h2 = Some(SharedH2::new(sender, driver));
            }
            None if *pooled < MAX_POOLED => {
                slot.h2 = Some(SharedH2::new(sender, driver));
                *pooled += 1;
            }
            None => {}
        }
    }

    fn note_h1(&self, key: &Key) {
        if self.opts.http2 && self.reuse() {
            self.lock().slots.entry(key.clone()).or_default().speaks_h1 = true;
        }
    }

    /// Returns a connection after a response that was read to its end within the deadline. HTTP/1.1
    /// connections go back on their key's idle stack if there is room; HTTP/2 ones are already shared.
    pub(super) fn checkin(&self, conn: Conn) {
        let Proto::H1 { sender, driver } = conn.proto else {
            return;
        };
        if !self.reuse() || sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        state.maybe_sweep(now, self.opts.idle_timeout);
        if state.pooled >= MAX_POOLED {
            return;
        }
        let slot = state.slots.entry(conn.key).or_default();
        if slot.idle.len() >= self.opts.max_idle_per_key {
            return;
        }
        slot.idle.push(IdleH1 {
            sender,
            driver,
            since: now,
        });
        state.pooled += 1;
    }

    /// Stops sharing `conn` if it is the key's shared HTTP/2 connection (it refused a request).
    pub(super) fn discard(&self, conn: &Conn) {
        let Proto::H2 { driver, .. } = &conn.proto else {
            return;
        };
        let mut state = self.lock();
        let State { slots, pooled, .. } = &mut *state;
        if let Some(slot) = slots.get_mut(&conn.key) {
            if slot.h2.as_ref().is_some_and(|h2| Arc::ptr_eq(&h2.driver, driver)) {
                slot.h2 = None;
                *pooled = pooled.saturating_sub(1);
            }
        }
    }
}

enum AfterWait {
    Shared(Conn),
    SpeaksH1,
    Connect,
}

impl SharedH2 {
    fn new(sender: &http2::SendRequest<ReqBody>, driver: &Arc<Driver>) -> SharedH2 {
        SharedH2 {
            sender: sender.clone(),
            driver: driver.clone(),
            last_used: Instant::now(),
        }
    }
}

/// A handle on the key's shared HTTP/2 connection, dropping it from the slot if it has closed or has been
/// idle for `idle_timeout`.
fn take_h2(
    slot: &mut Slot,
    pooled: &mut usize,
    key: &Key,
    now: Instant,
    idle_timeout: Duration,
) -> Option<Conn> {
    let h2 = slot.h2.as_mut()?;
    if h2.sender.is_closed() || now.duration_since(h2.last_used) >= idle_timeout {
        slot.h2 = None;
        *pooled = pooled.saturating_sub(1);
        return None;
    }
    h2.last_used = now;
    Some(Conn {
        key: key.clone(),
        reused: true,
        proto: Proto::H2 {
            sender: h2.sender.clone(),
            driver: h2.driver.clone(),
        },
    })
}

impl State {
    /// Drops expired and closed connections and empty slots, at most once per [`SWEEP_INTERVAL`].
    fn maybe_sweep(&mut self, now: Instant, idle_timeout: Duration) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let mut pooled = 0;
        self.slots.retain(|_, slot| {
            slot.idle
                .retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < idle_timeout);
            let h2_done = slot
                .h2
                .as_ref()
                .is_some_and(|h2| h2.sender.is_closed() || now.duration_since(h2.last_used) >= idle_timeout);
            if h2_done {
                slot.h2 = None;
            }
            pooled += slot.idle.len() + usize::from(slot.h2.is_some());
            let connecting = Arc::strong_count(&slot.connecting) > 1;
            !slot.idle.is_empty() || slot.h2.is_some() || connecting
        });
        self.pooled = pooled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// Dropping a connection's driver ends every task spawned for it, whether spawned by us or by hyper
    /// through the executor; a task that would otherwise run forever is what a hostile peer would aim for.
    #[tokio::test]
    async fn dropping_the_driver_ends_every_task_of_the_connection() {
        let (driver, exec) = driver();
        let (ours_tx, ours) = oneshot::channel::<()>();
        let (hypers_tx, hypers) = oneshot::channel::<()>();
        exec.spawn(async move {
            let _alive = ours_tx;
            std::future::pending::<()>().await;
        });
        hyper::rt::Executor::execute(&exec, async move {
            let _alive = hypers_tx;
            std::future::pending::<()>().await;
        });
        drop(driver);
        let wait = Duration::from_secs(5);
        // Each task holds its sender until it ends; a dropped sender is a receive error.
        assert!(tokio::time::timeout(wait, ours)
            .await
            .expect("task still alive")
            .is_err());
        assert!(tokio::time::timeout(wait, hypers)
            .await
            .expect("task still alive")
            .is_err());
    }
}
