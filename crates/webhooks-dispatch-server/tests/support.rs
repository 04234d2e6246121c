//! Fixtures: a database per test for each engine, the real server in-process on port 0, a loopback HTTPS
//! receiver whose CA the server trusts through the `ca_file` setting, and a small HTTP client.
//!
//! Nothing leaves 127.0.0.1: the server listens there, the receiver binds there, endpoint URLs name it as an
//! IP literal (so no DNS lookup happens), and the SSRF allowlist holds exactly 127.0.0.1/32.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use webhooks_dispatch::keyring::MasterKey;
use webhooks_dispatch_server::config::{LogFormat, RawSettings};
use webhooks_dispatch_server::{logging, Config, Error};
use webhooks_dispatch_testkit::pg::fresh_database;
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, TestCa};

/// The storage engines every engine-parametrized test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    /// PostgreSQL: a fresh database on the testkit's throwaway cluster (or on `DATABASE_URL`'s server).
    Postgres,
    /// The embedded default: a SQLite file in the test's scratch directory.
    Sqlite,
}

impl Engine {
    /// A URL for a brand-new, empty database of this engine. `_scratch` is a per-test directory, for
    /// file-based engines.
    pub async fn database_url(self, scratch: &Path) -> String {
        match self {
            Engine::Postgres => fresh_database().await,
            Engine::Sqlite => format!("sqlite://{}", scratch.join("webhooks-dispatch.db").display()),
        }
    }
}

/// Longest any one test may run before it fails with its name instead of hanging the whole run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a test body, failing with `name` if it takes longer than [`TEST_TIMEOUT`].
pub async fn bounded(name: &str, test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("{name} did not finish within {TEST_TIMEOUT:?}");
    }
}

/// Generates one `#[tokio::test]` per engine for each named `async fn(Engine)`, each bounded by
/// [`TEST_TIMEOUT`](crate::support::TEST_TIMEOUT).
#[macro_export]
macro_rules! engines {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::bounded(
                        concat!(module_path!(), "::", stringify!($name), " (engine Postgres)"),
                        super::$name($crate::support::Engine::Postgres),
                    )
                    .await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::bounded(
                        concat!(module_path!(), "::", stringify!($name), " (engine Sqlite)"),
                        super::$name($crate::support::Engine::Sqlite),
                    )
                    .await
                }
            )*
        }
    };
}

/// The API key every test server accepts.
pub const API_KEY: &str = "test-key-0123456789abcdef";

/// Installs the global subscriber once per test process; it carries the metrics tap. Quiet unless
/// `RUST_LOG` says otherwise.
pub fn init_logging() {
    logging::init(LogFormat::Human, "warn");
}

/// PEM text of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A test CA and a receiver on 127.0.0.1 whose certificate it issued, plus a scratch directory holding
/// the CA as PEM (for the `ca_file` setting).
pub struct Fixture {
    /// Issued the receiver's certificate; tests that need a second receiver start it with this CA.
    pub ca: TestCa,
    pub receiver: Receiver,
    pub scratch: tempfile::TempDir,
    pub database_url: String,
    /// The master key ring (`id:base64`) every process of a PostgreSQL test is given, as a deployment must;
    /// `None` for SQLite, whose processes use the default key file beside the database.
    pub master_keys: Option<String>,
    /// The ring of in-process servers ([`Fixture::settings`]), whatever the engine: the key file's notice
    /// would otherwise be logged by every SQLite test (the binary's tests cover the default file).
    ring: String,
}

impl Fixture {
    pub async fn new(engine: Engine) -> Fixture {
        init_logging();
        let scratch = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        std::fs::write(scratch.path().join("ca.pem"), pem(&ca.cert_der())).expect("write CA");
        let receiver = Receiver::start(&ca, ReceiverOptions::default())
            .await
            .expect("receiver");
        let database_url = engine.database_url(scratch.path()).await;
        let ring = master_key_text();
        let master_keys = match engine {
            Engine::Postgres => Some(ring.clone()),
            Engine::Sqlite => None,
        };
        Fixture {
            ca,
            receiver,
            scratch,
            database_url,
            master_keys,
            ring,
        }
    }

    pub fn ca_file(&self) -> std::path::PathBuf {
        self.scratch.path().join("ca.pem")
    }

    /// The receiver as an endpoint URL: an IP literal, covered by the certificate's IP SAN.
    pub fn receiver_url(&self) -> String {
        url_of(&self.receiver)
    }

    /// Settings for a test server: this database, the test key, a master key ring, loopback allowlisted, the
    /// test CA trusted, short poll interval and attempt timeout.
    pub fn settings(&self) -> RawSettings {
        RawSettings {
            database_url: Some(self.database_url.clone()),
            database_max_connections: Some(4),
            api_keys: Some(vec![API_KEY.to_owned()]),
            allow_net: Some(vec!["127.0.0.1/32".to_owned()]),
            ca_file: Some(self.ca_file()),
            poll_interval: Some("100ms".to_owned()),
            attempt_timeout: Some("5s".to_owned()),
            shutdown_grace: Some("2s".to_owned()),
            master_keys: Some(self.ring.clone()),
            ..RawSettings::default()
        }
    }
}

/// A freshly generated master key, as `id:base64` text.
pub fn master_key_text() -> String {
    MasterKey::generate("test").expect("a key").encoded().to_string()
}

/// A receiver as an endpoint URL: an IP literal, covered by the certificate's IP SAN.
pub fn url_of(receiver: &Receiver) -> String {
    format!("https://127.0.0.1:{}/hook", receiver.port())
}

/// The real server, in this process, on an OS-chosen port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub fixture: Fixture,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl TestServer {
    /// Starts a server with the fixture's default settings.
    pub async fn start(engine: Engine) -> TestServer {
        Self::start_with(engine, |_| {}).await
    }

    /// Starts a server after `tweak` has adjusted its settings (and, through `worker`, the resolved config).
    pub async fn start_with(engine: Engine, tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on(Fixture::new(engine).await, tweak).await
    }

    /// Starts a server on a fixture the test prepared (e.g. with its `database_url` pointed through a
    /// proxy), after `tweak` has adjusted the resolved config.
    pub async fn start_on(fixture: Fixture, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::resolve(fixture.settings()).expect("test settings are valid");
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(webhooks_dispatch_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        let server = TestServer {
            addr,
            fixture,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    /// Waits until `/readyz` answers 200 (migration done, database reachable).
    async fn wait_ready(&self) {
        eventually("the server becomes ready", Duration::from_secs(30), || async {
            let reply = try_send(self.addr, get("/readyz")).await.ok()?;
            (reply.status == 200).then_some(())
        })
        .await
    }

    /// Sends a request with the test API key.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        call(self.addr, method, path, body).await
    }

    /// Requests shutdown and waits for `run` to return; it must return `Ok`.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        let task = self.task.take().expect("running");
        let result = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("server stopped within 20 s")
            .expect("server task did not panic");
        result.expect("run returned Ok");
    }

    /// Registers an endpoint on the receiver; returns (id, secret).
    pub async fn endpoint(&self) -> (String, String) {
        let body = serde_json::json!({"owner_id": "acme", "url": self.fixture.receiver_url()});
        let reply = self.call(Method::POST, "/v1/endpoints", Some(body)).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let json = reply.json();
        (
            json["id"].as_str().unwrap().to_owned(),
            json["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Polls a message until it reaches `state`.
    pub async fn wait_for_state(&self, message_id: &str, state: &str) -> Value {
        let what = format!("message {message_id} becomes {state}");
        eventually(&what, Duration::from_secs(30), || async {
            let path = format!("/v1/messages/{message_id}");
            let json = self.call(Method::GET, &path, None).await.json();
            (json["state"] == state).then_some(json)
        })
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failed test must not leave the server running on the shared runtime.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Evaluates `check` until it yields `Some`, panicking with `what` after `within`. For conditions with no
/// event to wait on (an HTTP answer, rows in a database): it polls, and returns as soon as they hold.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// `error.code` of an error response.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error response: {}", self.text()))
            .to_owned()
    }
}

/// A request with an optional JSON body.
pub fn build(method: Method, path: &str, body: Option<String>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request")
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    build(Method::GET, path, None)
}

pub fn authorize(req: &mut Request<Full<Bytes>>, key: &str) {
    let value = HeaderValue::from_str(&format!("Bearer {key}")).expect("header");
    req.headers_mut().insert(AUTHORIZATION, value);
}

pub fn set_header(req: &mut Request<Full<Bytes>>, name: &'static str, value: &str) {
    req.headers_mut().insert(
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("header"),
    );
}

/// Sends a request with the test API key to the server at `addr` (in-process or a child process).
pub async fn call(addr: SocketAddr, method: Method, path: &str, body: Option<Value>) -> Reply {
    let mut req = build(method, path, body.map(|b| b.to_string()));
    authorize(&mut req, API_KEY);
    send(addr, req).await
}

/// Sends one request on a fresh HTTP/1.1 connection.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    try_send(addr, req).await.expect("request failed")
}

async fn try_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Result<Reply, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(req).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
