//! An HTTP/2 receiver that answers with an endless body, as fast as flow control lets it: what it manages to
//! send is bounded by the windows we advertise, which are sized to the prefix we read.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use webhooks_dispatch::{DeliverDue, NewEndpoint, NewMessage};
use webhooks_dispatch_testkit::receiver::TestCa;

use crate::support::{Ctx, Engine, RECEIVER_HOST};

/// A TCP stream that counts every byte written to it (TLS records included).
struct Counted {
    tcp: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, buf))?;
        self.written.fetch_add(n as u64, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// An HTTP/2-only receiver whose every response is 200 and a body of 1 MiB chunks that never ends: hyper
/// hands each chunk to h2, which sends as much as the client's windows allow, at once.
struct Flooder {
    port: u16,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Flooder {
    async fn start(ca: &TestCa) -> Flooder {
        let (chain, key) = ca.leaf(&[RECEIVER_HOST]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let written = Arc::new(AtomicU64::new(0));
        let counter = written.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, written) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(Counted { tcp, written }).await else {
                        return;
                    };
                    let service = service_fn(|_request| async {
                        let chunks = futures_util::stream::repeat_with(|| {
                            Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 1 << 20])))
                        });
                        Ok::<_, Infallible>(Response::new(StreamBody::new(chunks)))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Flooder { port, written, task }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// With hyper's defaults (2 MiB per stream, 5 MiB per connection) the receiver got megabytes onto the wire
/// per attempt, all of them buffered by us while we read 4 KiB. With the windows sized to the prefix, what it
/// can send is the stream window (16 KiB for the default 4 KiB prefix) plus what we read and released, plus
/// the TLS handshake and frame overhead: well under 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_http2_body_is_stopped_by_flow_control_near_the_prefix_we_read() {
    let ctx = Ctx::new(Engine::Sqlite).await;
    let flooder = Flooder::start(&ctx.ca).await;
    let d = ctx.builder().build();
    let url = format!("https://{RECEIVER_HOST}:{}/hook", flooder.port);
    let ep = d.register_endpoint(NewEndpoint::new("o", url)).await.unwrap();
    for n in 0..3 {
        d.dispatch(NewMessage::new(&ep.id, "a", n)).await.unwrap();
        let report = d.deliver_due(DeliverDue::default()).await.unwrap();
        assert_eq!(report.delivered, 1, "the status decides the outcome: {report:?}");
        // Whatever the receiver could still push after we stopped reading arrives meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let written = flooder.written();
        let bound = (n + 1) * 64 * 1024;
        assert!(
            written < bound,
            "after {} attempts the receiver sent {written} bytes",
            n + 1
        );
    }
}
