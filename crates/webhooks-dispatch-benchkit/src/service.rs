//! The real service in this process, and the load generator that drives it.
//!
//! [`Service`] is `webhooks_dispatch_server::run` on 127.0.0.1:0 with a `Config` resolved from settings the
//! way the binary resolves them: only the database URL, an API key, `allow_net` 127.0.0.1/32 and the
//! benchmark CA as `ca_file` are set, everything else (worker concurrency 256, per-endpoint cap 16, pool of
//! 16 connections, poll interval, timeouts) is the service's default. No tracing subscriber is installed,
//! so the per-attempt log lines cost nothing here; a deployment that writes them pays for that on top.
//!
//! [`LoadGen`] is a separate tokio runtime whose threads carry one name, so [`ThreadGroup`] can tell how
//! much CPU the clients took from the service on this shared machine. Its clients are HTTP/1.1 keep-alive
//! connections (hyper's client connection over plain TCP: the service listens on loopback without TLS).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use webhooks_dispatch_server::config::RawSettings;
use webhooks_dispatch_server::Config;

use crate::cpu::ThreadGroup;
use crate::env::{BoxError, Env, Result};

/// The one API key the benchmark's service accepts.
pub const API_KEY: &str = "wdbench-0123456789abcdef";
/// Name of the load generator's threads (Linux keeps 15 bytes of it).
pub const LOADGEN_THREAD: &str = "wdb-loadgen";

/// The service running in this process until [`Service::stop`].
pub struct Service {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::result::Result<(), webhooks_dispatch_server::Error>>>,
    /// Holds the CA file for as long as the service runs.
    _scratch: tempfile::TempDir,
}

impl Service {
    /// Starts the service on `database_url` (creating its tables) and waits until `/readyz` answers 200.
    pub async fn start(env: &Env, database_url: String) -> Result<Service> {
        let scratch = tempfile::tempdir()?;
        let ca_file = scratch.path().join("ca.pem");
        std::fs::write(&ca_file, pem(&env.ca.cert_der()))?;
        // Secrets sealed as in production; a key of its own, since a run's database is thrown away with it.
        let master_key = webhooks_dispatch::keyring::MasterKey::generate("bench")?;
        let config = Config::resolve(RawSettings {
            database_url: Some(database_url),
            master_keys: Some(master_key.encoded().to_string()),
            api_keys: Some(vec![API_KEY.to_owned()]),
            allow_net: Some(vec!["127.0.0.1/32".to_owned()]),
            ca_file: Some(ca_file),
            ..RawSettings::default()
        })?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(webhooks_dispatch_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        let mut service = Service {
            addr,
            stop: Some(stop),
            task: Some(task),
            _scratch: scratch,
        };
        service.wait_ready().await?;
        Ok(service)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(task) = self.task.as_mut().filter(|t| t.is_finished()) {
                let ended = task.await;
                self.task = None;
                return Err(format!(
                    "the service stopped while starting: {:?}",
                    ended.map(|r| r.map_err(|e| e.to_string()))
                )
                .into());
            }
            let ready = async {
                let mut conn = Conn::open(self.addr).await?;
                conn.request(Method::GET, "/readyz", Bytes::new()).await
            };
            if matches!(ready.await, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the service did not become ready within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a graceful shutdown and waits for `run` to return, which it must do with `Ok`.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().ok_or("the service is not running")?;
        match tokio::time::timeout(Duration::from_secs(30), task).await {
            Ok(joined) => Ok(joined??),
            Err(_) => Err("the service did not stop within 30 s".into()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A failed measurement must not leave a service running on the benchmark's runtime.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// PEM text of a DER certificate, for the service's `ca_file`.
fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// One keep-alive HTTP/1.1 connection to the service, authenticated with [`API_KEY`].
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects; the connection's task runs on the runtime this is called from.
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    /// Sends one request (a JSON body unless empty) and reads the whole response: status and body.
    pub async fn request(&mut self, method: Method, path: &str, body: Bytes) -> Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "127.0.0.1")
            .header(AUTHORIZATION, format!("Bearer {API_KEY}"));
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let res = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = res.status().as_u16();
        Ok((status, res.into_body().collect().await?.to_bytes()))
    }

    /// POSTs a JSON body and insists on 201; returns the message ids of the answer (one for
    /// `/v1/messages`, one per message for `/v1/messages/batch`).
    pub async fn post_messages(&mut self, path: &str, body: Bytes) -> Result<Vec<String>> {
        let (status, answer) = self.request(Method::POST, path, body).await?;
        if status != 201 {
            let text = String::from_utf8_lossy(&answer);
            return Err(format!("POST {path}: status {status}: {text}").into());
        }
        message_ids(&answer)
    }
}

/// The ids in a `POST /v1/messages` or `/v1/messages/batch` answer.
fn message_ids(answer: &[u8]) -> Result<Vec<String>> {
    let json: serde_json::Value = serde_json::from_slice(answer)?;
    let id = |v: &serde_json::Value| {
        v.get("id")
            .and_then(|id| id.as_str())
            .map(str::to_owned)
            .ok_or_else(|| BoxError::from(format!("no message id in {v}")))
    };
    match json.get("messages").and_then(|m| m.as_array()) {
        Some(items) => items.iter().map(id).collect(),
        None => Ok(vec![id(&json)?]),
    }
}

/// Registers one endpoint per URL through `POST /v1/endpoints`; returns their ids in order. Setup, untimed.
pub async fn register(addr: SocketAddr, urls: &[String]) -> Result<Vec<String>> {
    let mut conn = Conn::open(addr).await?;
    let mut ids = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        let body = serde_json::json!({"owner_id": format!("customer_{i}"), "url": url});
        let (status, answer) = conn
            .request(Method::POST, "/v1/endpoints", Bytes::from(body.to_string()))
            .await?;
        if status != 201 {
            let text = String::from_utf8_lossy(&answer);
            return Err(format!("POST /v1/endpoints: status {status}: {text}").into());
        }
        let json: serde_json::Value = serde_json::from_slice(&answer)?;
        ids.push(json["id"].as_str().ok_or("no endpoint id")?.to_owned());
    }
    Ok(ids)
}

/// A tokio runtime of its own for the clients, with named threads.
pub struct LoadGen {
    runtime: Option<tokio::runtime::Runtime>,
    /// The runtime's threads, for their CPU share.
    pub threads: ThreadGroup,
}

impl LoadGen {
    /// As many worker threads as cores: the clients must never be what limits the service.
    pub fn new() -> Result<LoadGen> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name(LOADGEN_THREAD)
            .enable_all()
            .build()?;
        Ok(LoadGen {
            runtime: Some(runtime),
            threads: ThreadGroup::new(LOADGEN_THREAD),
        })
    }

    /// Runs `work` on the load generator's threads and waits for it from the caller's runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let runtime = self.runtime.as_ref().ok_or("load generator stopped")?;
        runtime.spawn(work).await?
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        // Dropped inside the benchmark's runtime, where a blocking shutdown is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What a closed-loop run saw.
pub struct Closed {
    /// When the first request went out (every connection was open by then).
    pub started: Instant,
    /// Until the last answer was read.
    pub elapsed: Duration,
    /// Per request, from sending it to having read its whole answer.
    pub latencies: Vec<Duration>,
    /// Every message id the service returned.
    pub ids: Vec<String>,
}

/// Sends every body as `POST path` from `clients` keep-alive connections, each sending its next request as
/// soon as its previous answer is read. Connections are opened before the clock starts. Run it on a
/// [`LoadGen`].
pub async fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    path: &'static str,
    bodies: Vec<Bytes>,
) -> Result<Closed> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients.min(bodies.len()).max(1) {
        conns.push(Conn::open(addr).await?);
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks: JoinSet<Result<(Vec<Duration>, Vec<String>)>> = JoinSet::new();
    for mut conn in conns {
        let (bodies, next) = (bodies.clone(), next.clone());
        tasks.spawn(async move {
            let (mut latencies, mut ids) = (Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok((latencies, ids));
                };
                let sent = Instant::now();
                ids.extend(conn.post_messages(path, body.clone()).await?);
                latencies.push(sent.elapsed());
            }
        });
    }
    let (mut latencies, mut ids) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (l, i) = done??;
        latencies.extend(l);
        ids.extend(i);
    }
    Ok(Closed {
        started,
        elapsed: started.elapsed(),
        latencies,
        ids,
    })
}

/// One request of an open-loop run.
pub struct Sent {
    /// When its tick fired, i.e. when it was due to go out (waiting for a free connection counts).
    pub at: Instant,
    /// From then until its answer was read.
    pub api_latency: Duration,
    /// The message id the service returned.
    pub id: String,
}

/// Sends the bodies as `POST /v1/messages` at a steady `rate_per_sec`, whatever the answers take (open
/// loop: a slow answer does not delay the next request), over a pool of `clients` keep-alive connections.
/// Run it on a [`LoadGen`].
pub async fn steady(
    addr: SocketAddr,
    clients: usize,
    rate_per_sec: u32,
    bodies: Vec<Bytes>,
) -> Result<Vec<Sent>> {
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
    let mut tasks: JoinSet<Result<Vec<Sent>>> = JoinSet::new();
    for _ in 0..clients.max(1) {
        let mut conn = Conn::open(addr).await?;
        let jobs_rx = jobs_rx.clone();
        tasks.spawn(async move {
            let mut sent = Vec::new();
            loop {
                let job = jobs_rx.lock().await.recv().await;
                let Some((at, body)) = job else {
                    return Ok(sent);
                };
                let mut ids = conn.post_messages("/v1/messages", body).await?;
                let id = ids.pop().ok_or("no message id")?;
                sent.push(Sent {
                    at,
                    api_latency: at.elapsed(),
                    id,
                });
            }
        });
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate_per_sec.max(1));
    // Catch up after a stall instead of skipping, so the average rate stays what was asked for.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for body in bodies {
        ticks.tick().await;
        jobs_tx
            .send((Instant::now(), body))
            .map_err(|_| "every client failed")?;
    }
    drop(jobs_tx);
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_come_from_single_and_batch_answers() {
        let single = br#"{"id": "msg_1", "created": true}"#;
        assert_eq!(super::message_ids(single).unwrap(), vec!["msg_1"]);
        let batch = br#"{"messages": [{"id": "msg_1", "created": true}, {"id": "msg_2", "created": true}]}"#;
        assert_eq!(super::message_ids(batch).unwrap(), vec!["msg_1", "msg_2"]);
        assert!(super::message_ids(br#"{"error": {"code": "x"}}"#).is_err());
    }

    #[tokio::test]
    async fn the_load_generator_cpu_is_counted_on_its_own_threads() {
        let loadgen = super::LoadGen::new().unwrap();
        let start = loadgen.threads.snapshot();
        let spun = loadgen.run(async {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
            let mut x = 0u64;
            while std::time::Instant::now() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            Ok(x)
        });
        spun.await.unwrap();
        let cores = loadgen.threads.cores_since(&start);
        assert!(cores > 0.05, "the load generator used {cores} cores");
    }

    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let pem = super::pem(&[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN CERTIFICATE-----"));
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert!(lines[1..lines.len() - 1].iter().all(|l| l.len() <= 64));
    }
}
