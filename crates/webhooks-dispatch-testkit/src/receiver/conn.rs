//! Accepting, TLS and per-request handling for [`super::Receiver`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{lock, InFlightGuard, Received, Reply, Shared};

/// Spawns tasks that end when the owning `Receiver` drops its shutdown
/// sender. Also hyper's executor, so HTTP/2 stream tasks, which outlive
/// nothing else we hold, are cut off too.
#[derive(Clone)]
pub(super) struct Exec(watch::Receiver<()>);

impl Exec {
    pub(super) fn new(shutdown: watch::Receiver<()>) -> Exec {
        Exec(shutdown)
    }

    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut shutdown = self.0.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                // Only ever errs, once the sender is gone; nothing is sent.
                _ = async { while shutdown.changed().await.is_ok() {} } => {}
            }
        });
    }
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future + Send + 'static,
{
    fn execute(&self, fut: F) {
        self.spawn(async move {
            fut.await;
        });
    }
}

pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    exec: Exec,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Typically EMFILE; back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        exec.spawn(serve(tcp, acceptor.clone(), shared.clone(), exec.clone()));
    }
}

async fn serve(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>, exec: Exec) {
    // Trickled bytes must leave one per write, not be coalesced by Nagle.
    let _ = tcp.set_nodelay(true);
    // Handshake failures are the client's business (tests of certificate
    // rejection provoke them), so they just end the connection.
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let io = SharedIo(Arc::new(Mutex::new(tls)));
    let conn = Arc::new(Conn {
        shared,
        sni,
        io: io.clone(),
    });
    let service = service_fn(move |req| handle(conn.clone(), req));
    let _ = auto::Builder::new(exec)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Per-connection context for the request handler.
struct Conn {
    shared: Arc<Shared>,
    sni: Option<String>,
    /// The same stream hyper serves, so a `Trickle` reply can bypass hyper.
    io: SharedIo,
}

async fn handle(conn: Arc<Conn>, req: Request<Incoming>) -> io::Result<Response<ReplyBody>> {
    let at = Instant::now();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str())
        .to_owned();
    let guard = InFlightGuard::enter(&conn.shared, &path);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    conn.shared.record(Received {
        method: parts.method.to_string(),
        path,
        headers: parts.headers,
        body,
        sni: conn.sni.clone(),
        http_version: parts.version,
        at,
    });
    // `streamed`: the body is produced while it is sent, so the request stays in flight until it ends.
    let (status, headers, body, streamed) = match conn.shared.next_reply() {
        Reply::Status {
            status,
            headers,
            body,
        } => (status, headers, Full::from(body).boxed(), false),
        Reply::Delayed(delay) => {
            tokio::time::sleep(delay).await;
            (200, Vec::new(), Full::from("ok").boxed(), false)
        }
        Reply::DelayedStatus(delay, status) => {
            tokio::time::sleep(delay).await;
            (status, Vec::new(), Full::from(Bytes::new()).boxed(), false)
        }
        Reply::EndlessBody => (200, Vec::new(), Endless::new().boxed(), true),
        // hyper's HTTP/1 dispatcher writes nothing while this future is
        // pending, so the raw stream is ours until we fail; the error then
        // makes hyper drop the connection.
        Reply::Trickle { every } if parts.version < Version::HTTP_2 => {
            return Err(trickle(conn.io.clone(), every).await);
        }
        // Hyper (HTTP/1) drops this future when the client disconnects.
        Reply::Hang | Reply::Trickle { .. } => return std::future::pending().await,
    };
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name, value);
    }
    // A complete response is over for the receiver once it is handed to hyper: counting it until hyper drops
    // the body would overlap the client's next request on the same connection, which the client may send as
    // soon as it has read this response, and report a concurrency the client never had.
    let guard = streamed.then_some(guard);
    response
        .body(ReplyBody {
            inner: body,
            _guard: guard,
        })
        .map_err(io::Error::other)
}

/// Writes `HTTP/1.1 200 OK` and an endless header byte by byte, each in its
/// own TLS record; returns only with the write error once the client gives up.
async fn trickle(mut io: SharedIo, every: Duration) -> io::Error {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nx-trickle: ";
    for i in 0.. {
        let byte = HEAD.get(i).copied().unwrap_or(b'.');
        let written = async {
            io.write_all(&[byte]).await?;
            io.flush().await
        };
        if let Err(e) = written.await {
            return e;
        }
        tokio::time::sleep(every).await;
    }
    io::Error::other("trickle ran out of bytes")
}

/// A response body that, for a streamed reply, keeps the request counted as
/// in flight until hyper has finished with it.
struct ReplyBody {
    inner: BoxBody<Bytes, Infallible>,
    _guard: Option<InFlightGuard>,
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const ENDLESS_CHUNK_LEN: usize = 16 * 1024;
static ENDLESS_CHUNK: [u8; ENDLESS_CHUNK_LEN] = [b'x'; ENDLESS_CHUNK_LEN];
const ENDLESS_TICK: Duration = Duration::from_millis(10);

/// A body that never ends: one chunk per tick.
struct Endless {
    tick: Pin<Box<Sleep>>,
}

impl Endless {
    fn new() -> Endless {
        Endless {
            tick: Box::pin(tokio::time::sleep(ENDLESS_TICK)),
        }
    }
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        ready!(self.tick.as_mut().poll(cx));
        let next = tokio::time::Instant::now() + ENDLESS_TICK;
        self.tick.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ENDLESS_CHUNK)))))
    }
}

/// The TLS stream, shared between hyper and a trickling handler.
///
/// The lock is held only within a single poll, never across an await, so
/// it cannot deadlock; hyper and the handler never write at the same time
/// (see `handle`).
#[derive(Clone)]
struct SharedIo(Arc<Mutex<TlsStream<TcpStream>>>);

impl AsyncRead for SharedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}
