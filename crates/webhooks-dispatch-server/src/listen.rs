//! The API's accept loop, with the limits `axum::serve` does not set: how long a request head may take (which
//! also ends idle keep-alive connections), how long a request may take, and how many connections are open.
//!
//! Why it matters: without them a client that opens connections and sends a header byte a minute holds each
//! one forever, unauthenticated, until file descriptors run out — and then the worker in the same process
//! cannot open connections to receivers, so messages burn their attempts. Beyond the cap a new connection is
//! accepted and closed at once (shed), so the listen backlog never fills with work we will not do and the
//! process keeps descriptors for its own outbound connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

/// Default for [`ServerLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ServerLimits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ServerLimits::max_connections`]: well under the usual 1,024 descriptors per process, so the
/// worker's outbound connections and the database pool always have room.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// How long to wait after `accept` fails (say, out of descriptors) before trying again, so the loop does not
/// spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The API server's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request head must arrive in full within this long of the connection opening or of the previous
    /// response; an idle keep-alive connection is closed when it passes.
    pub header_read_timeout: Duration,
    /// A request (reading its body and answering) must finish within this long, or it is answered 408.
    pub request_timeout: Duration,
    /// Connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes, then stops accepting and lets open
/// connections finish their requests (idle ones close at once) within `grace`. `shed` counts the
/// connections closed for being over the cap.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shed: Counter,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) {
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it: the client sees the connection end before any request.
            // Logged at the 1st, 2nd, 4th, 8th … so a flood does not flood the log too.
            if (shed.inc() + 1).is_power_of_two() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached; shedding new connections"
                );
            }
            continue;
        };
        // Answers are small and written whole: Nagle's algorithm would only hold them back.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(move |req: Request<Incoming>| {
            app.clone().oneshot(req.map(Body::new))
        }));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that times out or resets is its own business; nothing to report.
            let _ = watched.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace; closing them"
        );
    }
}
