//! One HTTP delivery attempt, hardened against hostile endpoints.
//!
//! - The destination is re-vetted on every attempt: the URL's host is resolved through the configured
//!   [`Resolver`], every answer must pass the [`AddressPolicy`], and the TCP connection goes to a vetted
//!   address directly — there is no second lookup a rebinding DNS server could answer differently.
//! - TLS uses the URL's hostname for SNI and certificate verification, so pinning the address does not weaken
//!   authentication.
//! - One absolute deadline covers DNS, connect, TLS and the response head: a server that trickles bytes cannot
//!   hold a delivery longer than the deadline.
//! - Only a bounded prefix of the response body is read, and redirects are never followed (hyper's connection
//!   API has no redirect logic; a 3xx is simply a permanent failure).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_rustls::TlsConnector;

use crate::retry::{parse_retry_after, AttemptResult};
use crate::signing::{sign, EndpointSecret};
use crate::ssrf::{vet, AddressPolicy, Destination, DestinationHost, Resolver, VetError};

/// Settings for the HTTP side of delivery.
#[derive(Clone)]
pub(crate) struct Deliverer {
    tls: TlsConnector,
    policy: AddressPolicy,
    resolver: Arc<dyn Resolver>,
    timeout: Duration,
    max_response_body: usize,
    user_agent: HeaderValue,
}

/// What to send in one attempt.
pub(crate) struct Outgoing<'a> {
    pub url: &'a str,
    pub msg_id: &'a str,
    pub body: &'a str,
    pub secret: &'a EndpointSecret,
    /// Unix seconds for `webhook-timestamp`: fresh for every attempt.
    pub timestamp: i64,
}

/// The result of one attempt and how long it took.
pub(crate) struct Attempted {
    pub result: AttemptResult,
    pub latency: Duration,
}

/// Mozilla's root store, the default trust for public endpoints.
pub(crate) fn default_roots() -> RootCertStore {
    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

fn client_config(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The ring provider supports rustls' safe default protocol versions by construction.
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Aborts the spawned connection driver when the attempt ends, whatever way it ends (including the deadline
/// dropping the attempt future), so a stalled server never keeps a task alive.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Failure {
    Refused(String),
    Network(&'static str),
}

impl Deliverer {
    pub(crate) fn new(
        roots: RootCertStore,
        policy: AddressPolicy,
        resolver: Arc<dyn Resolver>,
        timeout: Duration,
        max_response_body: usize,
        user_agent: HeaderValue,
    ) -> Self {
        Deliverer {
            tls: TlsConnector::from(Arc::new(client_config(roots))),
            policy,
            resolver,
            timeout,
            max_response_body,
            user_agent,
        }
    }

    /// Runs one attempt. Never fails: every way it can end is an [`AttemptResult`].
    pub(crate) async fn attempt(&self, out: Outgoing<'_>) -> Attempted {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = match Destination::parse(out.url) {
            Err(e) => AttemptResult::Refused(e.to_string()),
            Ok(dest) => match timeout_at(deadline, self.send(&dest, &out, deadline)).await {
                Err(_elapsed) => AttemptResult::Timeout,
                Ok(Err(Failure::Refused(why))) => AttemptResult::Refused(why),
                Ok(Err(Failure::Network(what))) => AttemptResult::Network(what),
                Ok(Ok(result)) => result,
            },
        };
        Attempted {
            result,
            latency: started.elapsed(),
        }
    }

    async fn send(
        &self,
        dest: &Destination,
        out: &Outgoing<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<AttemptResult, Failure> {
        let addrs = vet(&self.policy, self.resolver.as_ref(), dest)
            .await
            .map_err(|e| match e {
                VetError::Refused(r) => Failure::Refused(r.to_string()),
                _ => Failure::Network("dns lookup failed"),
            })?;
        let tcp = connect_any(&addrs).await?;
        let server_name = match dest.host() {
            DestinationHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            DestinationHost::Domain(name) => ServerName::try_from(name.clone())
                .map_err(|_| Failure::Refused("invalid host name".to_owned()))?,
        };
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|_| Failure::Network("tls handshake failed"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|_| Failure::Network("http handshake failed"))?;
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));

        let signature = sign(out.secret, out.msg_id, out.timestamp, out.body.as_bytes())
            .map_err(|_| Failure::Refused("endpoint secret unusable".to_owned()))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(dest.path_and_query())
            .header(HOST, dest.host_header())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .header("webhook-id", out.msg_id)
            .header("webhook-timestamp", out.timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::copy_from_slice(out.body.as_bytes())))
            .map_err(|_| Failure::Refused("request could not be built".to_owned()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| Failure::Network("connection failed before a response"))?;

        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            _ => None,
        };
        // The status decides the outcome; the body is read only so a well-behaved server's response completes,
        // and only a bounded prefix of it, within what is left of the same deadline.
        let _ = timeout_at(
            deadline,
            drain_prefix(response.into_body(), self.max_response_body),
        )
        .await;
        Ok(AttemptResult::Response {
            status: status.as_u16(),
            retry_after,
        })
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, Failure> {
    for addr in addrs {
        if let Ok(tcp) = TcpStream::connect(addr).await {
            let _ = tcp.set_nodelay(true);
            return Ok(tcp);
        }
    }
    Err(Failure::Network("connection failed"))
}

async fn drain_prefix(mut body: hyper::body::Incoming, limit: usize) {
    let mut read = 0usize;
    while read < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                }
            }
            _ => break,
        }
    }
}
