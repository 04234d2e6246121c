//! One HTTP delivery attempt, hardened against hostile endpoints, over pooled connections.
//!
//! - The destination is re-vetted on every attempt: the URL's host is resolved through the configured
//!   [`Resolver`] (or taken from the [`dns`] cache of answers that passed vetting, for a bounded TTL), every
//!   address is checked against the [`AddressPolicy`] — cached ones included — and the connection goes to a
//!   vetted address directly: there is no second lookup a rebinding DNS server could answer differently.
//! - Connections are reused through the [`pool`], keyed by (TLS server name, vetted address) and looked up
//!   only under the addresses of the current vetted answer, so reuse never reaches an address a fresh connect
//!   would not. HTTP/2 is negotiated by ALPN and multiplexed; HTTP/1.1 keeps a stack of idle connections.
//! - TLS uses the URL's hostname for SNI and certificate verification, so pinning the address does not weaken
//!   authentication.
//! - One absolute deadline covers DNS, connect, TLS, the request and the response head (and bounds the body
//!   read): a server that trickles bytes cannot hold a delivery longer than the deadline.
//! - Only a bounded prefix of the response body is read. An HTTP/1.1 connection goes back to the pool only if
//!   the whole body fit in that prefix within the deadline; otherwise it is closed, its task ended. Redirects
//!   are never followed (hyper's connection API has no redirect logic; a 3xx is simply a permanent failure).

mod dns;
mod h2;
mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::time::timeout_at;
use tokio_rustls::TlsConnector;

use crate::headers::WireHeaders;
use crate::retry::{parse_retry_after, AttemptResult};
use crate::signing::{sign_all, SigningSecret};
use crate::ssrf::{vet, AddressPolicy, Destination, DestinationHost, Resolver, VetError};

use dns::DnsCache;
use pool::{Conn, Pool, PoolOptions, ReqBody, SendFailed};

/// Settings for the HTTP side of delivery. Clones share one DNS cache and one connection pool.
#[derive(Clone)]
pub(crate) struct Deliverer {
    policy: AddressPolicy,
    resolver: Arc<dyn Resolver>,
    dns: Arc<DnsCache>,
    pool: Arc<Pool>,
    timeout: Duration,
    max_response_body: usize,
    user_agent: HeaderValue,
}

/// Delivery settings from the builder.
pub(crate) struct DeliveryOptions {
    pub timeout: Duration,
    pub max_response_body: usize,
    pub user_agent: HeaderValue,
    pub dns_cache_ttl: Duration,
    pub pool_idle_timeout: Duration,
    pub max_idle_per_destination: usize,
    pub http2: bool,
    /// Most attempts in flight to one endpoint: the HTTP/2 streams one connection carries at once.
    pub h2_streams: usize,
    /// Bound on TCP connect and on the TLS handshake of a new connection, inside the attempt deadline.
    pub connect_timeout: Duration,
}

/// What to send in one attempt.
pub(crate) struct Outgoing<'a> {
    pub url: &'a str,
    pub msg_id: &'a str,
    pub body: &'a str,
    /// Every key that signs it, newest first (one signature each in the one header).
    pub keys: &'a [SigningSecret],
    /// The endpoint's custom headers, checked against the reserved names when they were stored.
    pub headers: &'a WireHeaders,
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

fn client_config(roots: RootCertStore, http2: bool) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The ring provider supports rustls' safe default protocol versions by construction.
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config
}

enum Failure {
    Refused(String),
    Network(&'static str),
}

fn vet_failure(e: VetError) -> Failure {
    match e {
        VetError::Refused(r) => Failure::Refused(r.to_string()),
        VetError::Lookup(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            Failure::Network("dns lookup timed out")
        }
        _ => Failure::Network("dns lookup failed"),
    }
}

impl Deliverer {
    pub(crate) fn new(
        roots: RootCertStore,
        policy: AddressPolicy,
        resolver: Arc<dyn Resolver>,
        opts: DeliveryOptions,
    ) -> Self {
        let tls = TlsConnector::from(Arc::new(client_config(roots, opts.http2)));
        let pool = Pool::new(
            tls,
            PoolOptions {
                idle_timeout: opts.pool_idle_timeout,
                max_idle_per_key: opts.max_idle_per_destination,
                http2: opts.http2,
                h2_windows: h2::Windows::for_prefix(opts.max_response_body, opts.h2_streams),
                connect_timeout: opts.connect_timeout,
            },
        );
        Deliverer {
            policy,
            resolver,
            dns: Arc::new(DnsCache::new(opts.dns_cache_ttl, dns::MAX_ENTRIES)),
            pool: Arc::new(pool),
            timeout: opts.timeout,
            max_response_body: opts.max_response_body,
            user_agent: opts.user_agent,
        }
    }

    /// The absolute deadline of one attempt and the response-body read limit, for tests of the defaults.
    #[cfg(test)]
    pub(crate) fn limits(&self) -> (Duration, usize) {
        (self.timeout, self.max_response_body)
    }

    /// Runs one attempt. Never fails: every way it can end is an [`AttemptResult`].
    pub(crate) async fn attempt(&self, out: Outgoing<'_>) -> Attempted {
        let started = Instant::now();
        let now = tokio::time::Instant::now();
        // The builder clamps the timeout, so the sum exists; were it ever past the clock's range, the attempt
        // would time out at once rather than panic.
        let deadline = now.checked_add(self.timeout).unwrap_or(now);
        let result = match Destination::parse(out.url) {
            Err(e) => AttemptResult::Refused(e.to_string()),
            // Dropping `send` at the deadline drops whatever connection it holds: an HTTP/1.1 connection is
            // closed (its driver ends), an HTTP/2 stream is reset.
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

    /// The vetted addresses for `dest`: the IP literal, a cached vetted answer, or a fresh lookup.
    async fn vetted(&self, dest: &Destination) -> Result<Arc<[SocketAddr]>, Failure> {
        let DestinationHost::Domain(name) = dest.host() else {
            // An IP literal is checked as is; the resolver is not consulted and there is nothing to cache.
            let addrs = vet(&self.policy, self.resolver.as_ref(), dest)
                .await
                .map_err(vet_failure)?;
            return Ok(addrs.into());
        };
        if let Some(addrs) = self.dns.get(name, dest.port(), tokio::time::Instant::now()) {
            // Cached answers passed this policy when stored; checking again costs little and means the cache
            // can never be the reason a refused address is contacted.
            if let Some(refusal) = addrs.iter().find_map(|a| self.policy.check(a.ip()).err()) {
                self.dns.remove(name, dest.port());
                return Err(Failure::Refused(refusal.to_string()));
            }
            return Ok(addrs);
        }
        // Failures and refusals return here, before the insert: only fully vetted answers are cached, so a
        // refusal is re-decided by a fresh lookup every time and a transient failure does not stick.
        let addrs: Arc<[SocketAddr]> = vet(&self.policy, self.resolver.as_ref(), dest)
            .await
            .map_err(vet_failure)?
            .into();
        self.dns
            .insert(name, dest.port(), addrs.clone(), tokio::time::Instant::now());
        Ok(addrs)
    }

    async fn send(
        &self,
        dest: &Destination,
        out: &Outgoing<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<AttemptResult, Failure> {
        let addrs = self.vetted(dest).await?;
        let server_name = dest.host_str();
        let sni = match dest.host() {
            DestinationHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            DestinationHost::Domain(name) => ServerName::try_from(name.clone())
                .map_err(|_| Failure::Refused("invalid host name".to_owned()))?,
        };
        let signature = sign_all(out.keys, out.msg_id, out.timestamp, out.body.as_bytes())
            .map_err(|_| Failure::Refused("endpoint secret unusable".to_owned()))?;
        let body = Bytes::copy_from_slice(out.body.as_bytes());
        let request = |conn: &Conn| self.request(dest, out, &signature, body.clone(), conn.is_http2());

        // Only the current vetted answer is offered to the pool: a connection to any other address, however
        // recently it was fine, is not reused.
        let mut conn = match self.pool.checkout(&server_name, &addrs).await {
            Some(conn) => conn,
            None => self.pool.connect(&server_name, &sni, &addrs).await?,
        };
        let response = match conn.send(request(&conn)?).await {
            Ok(response) => response,
            // A pooled connection can close just as it is picked. When the request provably never left, one
            // fresh connection (to the same vetted answer) is tried; otherwise the retry policy decides.
            Err(SendFailed::Unsent) if conn.reused() => {
                self.pool.discard(&conn);
                conn = self.pool.connect(&server_name, &sni, &addrs).await?;
                conn.send(request(&conn)?)
                    .await
                    .map_err(|_| Failure::Network("connection failed before a response"))?
            }
            Err(_) => return Err(Failure::Network("connection failed before a response")),
        };

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
        let complete = timeout_at(
            deadline,
            drain_prefix(response.into_body(), self.max_response_body),
        )
        .await
        .unwrap_or(false);
        if complete {
            // The response ended cleanly, so the connection is between messages and safe to reuse.
            self.pool.checkin(conn);
        }
        // Otherwise `conn` drops here: an HTTP/1.1 connection with unread body bytes is closed, never reused,
        // and on HTTP/2 dropping the body resets just that stream.
        Ok(AttemptResult::Response {
            status: status.as_u16(),
            retry_after,
        })
    }

    fn request(
        &self,
        dest: &Destination,
        out: &Outgoing<'_>,
        signature: &str,
        body: Bytes,
        http2: bool,
    ) -> Result<Request<ReqBody>, Failure> {
        // HTTP/1.1 takes the origin form; HTTP/2 needs the scheme and authority to fill in `:scheme` and
        // `:authority`. The Host header is sent either way, with the same value as `:authority`.
        let target = if http2 {
            format!("https://{}{}", dest.host_header(), dest.path_and_query())
        } else {
            dest.path_and_query()
        };
        let mut builder = Request::builder();
        for (name, value) in out.headers.iter() {
            builder = builder.header(name, value.clone());
        }
        builder
            .method(Method::POST)
            .uri(target)
            .header(HOST, dest.host_header())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .header("webhook-id", out.msg_id)
            .header("webhook-timestamp", out.timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(body))
            .map_err(|_| Failure::Refused("request could not be built".to_owned()))
    }
}

/// Reads at most about `limit` bytes of the body; `true` only if the body ended cleanly within them.
async fn drain_prefix(mut body: hyper::body::Incoming, limit: usize) -> bool {
    use hyper::body::Body as _;
    let mut read = 0usize;
    while read < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len();
                }
            }
            Some(Err(_)) => return false,
            None => return true,
        }
    }
    // The limit was reached; the body may still have ended exactly there.
    body.is_end_stream()
}
