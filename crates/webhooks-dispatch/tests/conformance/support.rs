//! Shared fixtures: a fresh database per test on either adapter, a loopback HTTPS receiver with a test CA,
//! an injected resolver, a manual clock, and an executor wrapper that counts statements.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use webhooks_dispatch::keyring::{KeyRing, MasterKey};
use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::store::rusqlite::SqliteExecutor;
use webhooks_dispatch::store::sqlx::SqlxListener;
use webhooks_dispatch::store::tokio_postgres::TokioPostgresListener;
use webhooks_dispatch::store::{BoxFuture, Executor, Listener, Row, Statements, Value};
use webhooks_dispatch::{
    Clock, DispatchError, Dispatcher, DispatcherBuilder, NewEndpoint, RetryPolicy, StorageError, Worker,
    WorkerReport,
};
use webhooks_dispatch_testkit::pg::fresh_database;
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, TestCa};

/// The storage engines the suite runs against; every test in `conformance!` runs once per engine.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    /// PostgreSQL through the sqlx adapter (`PgPool`).
    Sqlx,
    /// PostgreSQL through the tokio-postgres adapter (deadpool `Pool`).
    TokioPostgres,
    /// SQLite (bundled) through the rusqlite adapter, on a temporary file.
    Sqlite,
}

/// A SQLite database file that lives exactly as long as the test's executor.
struct SqliteFile {
    exec: SqliteExecutor,
    _dir: tempfile::TempDir,
}

impl Executor for SqliteFile {
    fn statements(&self) -> &'static Statements {
        self.exec.statements()
    }
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        self.exec.query(sql, params)
    }
    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.exec.batch_execute(sql)
    }
}

pub type Exec = Arc<dyn Executor>;

impl Engine {
    /// A pool on a brand-new database (not migrated), plus its URL.
    pub async fn connect(self) -> (Exec, String) {
        if let Engine::Sqlite = self {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("webhooks.db");
            let exec = SqliteExecutor::open(&path).expect("open sqlite");
            return (
                Arc::new(SqliteFile { exec, _dir: dir }),
                format!("sqlite://{}", path.display()),
            );
        }
        let url = fresh_database().await;
        let exec: Exec = match self {
            Engine::Sqlx => Arc::new(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect(&url)
                    .await
                    .expect("sqlx connect"),
            ),
            Engine::TokioPostgres => Arc::new(deadpool_pool(&url)),
            Engine::Sqlite => unreachable!("handled above"),
        };
        (exec, url)
    }
}

/// A LISTEN connection for workers, through the engine's own adapter; SQLite has none (one process: workers
/// are woken in memory).
pub async fn listener(engine: Engine, url: &str) -> Option<Box<dyn Listener>> {
    match engine {
        Engine::Sqlx => {
            let pool = sqlx::PgPool::connect(url).await.expect("sqlx connect");
            Some(Box::new(SqlxListener::connect(&pool).await.expect("listen")))
        }
        Engine::TokioPostgres => Some(Box::new(
            TokioPostgresListener::connect(url.parse().expect("url"), tokio_postgres::NoTls)
                .await
                .expect("listen"),
        )),
        Engine::Sqlite => None,
    }
}

pub fn deadpool_pool(url: &str) -> deadpool_postgres::Pool {
    let config: tokio_postgres::Config = url.parse().expect("database url");
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    deadpool_postgres::Pool::builder(manager)
        .max_size(8)
        .build()
        .expect("deadpool")
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn at(t: DateTime<Utc>) -> Arc<Self> {
        Arc::new(ManualClock(Mutex::new(t)))
    }
    pub fn advance(&self, d: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += chrono::Duration::from_std(d).unwrap();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A fixed instant for scheduling tests.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// Counts every statement that reaches the database, records their text, and publishes each completed
/// statement, so tests can wait for an event ("the worker's first claim finished") instead of sleeping.
pub struct CountingExecutor<E> {
    pub inner: E,
    pub statements: AtomicUsize,
    pub seen: Mutex<Vec<&'static str>>,
    finished: tokio::sync::watch::Sender<Vec<&'static str>>,
}

impl<E> CountingExecutor<E> {
    pub fn new(inner: E) -> Arc<Self> {
        Arc::new(CountingExecutor {
            inner,
            statements: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            finished: tokio::sync::watch::channel(Vec::new()).0,
        })
    }
    pub fn count(&self) -> usize {
        self.statements.load(Ordering::SeqCst)
    }

    /// Waits until `sql` has completed (successfully or not) at least `n` times; panics after `timeout`.
    pub async fn wait_completed(&self, sql: &'static str, n: usize, timeout: Duration) {
        let mut finished = self.finished.subscribe();
        let reached = finished.wait_for(|done| done.iter().filter(|s| **s == sql).count() >= n);
        if !matches!(tokio::time::timeout(timeout, reached).await, Ok(Ok(_))) {
            panic!("statement did not complete {n} times within {timeout:?}:\n{sql}");
        }
    }

    fn started(&self, sql: &'static str) {
        self.statements.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(sql);
    }
}

impl<E: Executor> Executor for CountingExecutor<E> {
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        self.started(sql);
        Box::pin(async move {
            let result = self.inner.query(sql, params).await;
            self.finished.send_modify(|done| done.push(sql));
            result
        })
    }
    fn statements(&self) -> &'static Statements {
        self.inner.statements()
    }
    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.started(sql);
        Box::pin(async move {
            let result = self.inner.batch_execute(sql).await;
            self.finished.send_modify(|done| done.push(sql));
            result
        })
    }
}

/// Fails chosen statements on purpose, the way a database that went away would: each call to a statement in
/// `failing` returns a connection-class [`StorageError`] without reaching the database, while `fail_next`
/// calls remain (unlimited with `usize::MAX`). Everything else passes through.
pub struct FaultyExecutor<E> {
    pub inner: E,
    failing: Mutex<Vec<(&'static str, usize)>>,
    /// Calls refused so far.
    pub refused: AtomicUsize,
}

impl<E> FaultyExecutor<E> {
    pub fn new(inner: E) -> Arc<Self> {
        Arc::new(FaultyExecutor {
            inner,
            failing: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
        })
    }

    /// Makes the next `calls` executions of `sql` fail (replacing any earlier setting for it; 0 heals it).
    pub fn fail_next(&self, sql: &'static str, calls: usize) {
        let mut failing = self.failing.lock().unwrap();
        failing.retain(|(s, _)| *s != sql);
        failing.push((sql, calls));
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn should_fail(&self, sql: &'static str) -> bool {
        let mut failing = self.failing.lock().unwrap();
        let Some((_, left)) = failing.iter_mut().find(|(s, _)| *s == sql) else {
            return false;
        };
        if *left == 0 {
            return false;
        }
        *left = left.saturating_sub(usize::from(*left != usize::MAX));
        self.refused.fetch_add(1, Ordering::SeqCst);
        true
    }
}

fn injected_failure() -> StorageError {
    StorageError::from_driver(Some("08006"), true, "injected: connection to the database lost")
}

impl<E: Executor> Executor for FaultyExecutor<E> {
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        if self.should_fail(sql) {
            return Box::pin(async { Err(injected_failure()) });
        }
        self.inner.query(sql, params)
    }
    fn statements(&self) -> &'static Statements {
        self.inner.statements()
    }
    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        if self.should_fail(sql) {
            return Box::pin(async { Err(injected_failure()) });
        }
        self.inner.batch_execute(sql)
    }
}

/// Everything one test needs: a migrated database, a receiver, a resolver mapping `receiver.test` to it.
pub struct Ctx {
    pub exec: Exec,
    pub db_url: String,
    pub ca: TestCa,
    pub receiver: Receiver,
    pub resolver: StaticResolver,
    /// The key ring sealing the test's endpoint keys: every test runs with secrets encrypted at rest, as a
    /// production dispatcher should.
    pub ring: Arc<KeyRing>,
    /// Its one master key, as `id:base64` text (for tests that move to another).
    pub master_key: String,
}

/// A key ring with one fresh master key, and that key's text.
pub fn test_ring() -> (Arc<KeyRing>, String) {
    let key = MasterKey::generate("test").expect("master key");
    let text = key.encoded();
    (Arc::new(KeyRing::new(key)), text.to_string())
}

pub const RECEIVER_HOST: &str = "receiver.test";

impl Ctx {
    pub async fn new(engine: Engine) -> Ctx {
        let (exec, db_url) = engine.connect().await;
        let ca = TestCa::new();
        let receiver = Receiver::start(&ca, ReceiverOptions::default())
            .await
            .expect("receiver");
        let resolver = StaticResolver::new();
        resolver.insert(RECEIVER_HOST, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let (ring, master_key) = test_ring();
        let ctx = Ctx {
            exec,
            db_url,
            ca,
            receiver,
            resolver,
            ring,
            master_key,
        };
        ctx.dispatcher().migrate().await.expect("migrate");
        ctx
    }

    /// The receiver's URL under its test host name.
    pub fn url(&self) -> String {
        format!("https://{RECEIVER_HOST}:{}/hook", self.receiver.port())
    }

    /// The test configuration: injected resolver, loopback explicitly allowlisted, the test CA trusted.
    pub fn builder(&self) -> DispatcherBuilder<Exec> {
        Dispatcher::builder(self.exec.clone())
            .resolver(Arc::new(self.resolver.clone()))
            .allow_net("127.0.0.1/32".parse().unwrap())
            .root_certificates(self.ca.root_store())
            .attempt_timeout(Duration::from_secs(5))
            .secret_cipher(self.ring.clone())
    }

    pub fn dispatcher(&self) -> Dispatcher<Exec> {
        self.builder().build()
    }

    /// A dispatcher on a manual clock, with a short retry policy.
    pub fn dispatcher_at(&self, clock: Arc<ManualClock>, retry: RetryPolicy) -> Dispatcher<Exec> {
        self.builder().clock(clock).retry_policy(retry).build()
    }

    /// Registers an endpoint on the receiver; returns (id, secret text).
    pub async fn endpoint<E: Executor>(&self, d: &Dispatcher<E>) -> (String, String) {
        let ep = d
            .register_endpoint(NewEndpoint::new("owner_1", self.url()))
            .await
            .expect("register");
        (ep.id, ep.secret.expect("an HMAC endpoint").expose().to_owned())
    }

    /// Runs one statement directly (for assertions on raw table contents).
    pub async fn scalar(&self, sql: &'static str, params: &[Value]) -> i64 {
        let rows = self.exec.query(sql, params).await.expect("query");
        rows[0].int(0).expect("int")
    }
}

/// A worker running on its own task until [`RunningWorker::stop`].
pub struct RunningWorker {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<WorkerReport, DispatchError>>,
}

impl RunningWorker {
    pub fn spawn<E: Executor + Clone + 'static>(worker: Worker<E>) -> RunningWorker {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        RunningWorker { stop, task }
    }

    /// Requests a graceful shutdown and returns the worker's report. A shutdown that does not finish within
    /// [`STOP_TIMEOUT`] fails the test instead of hanging it.
    pub async fn stop(self) -> WorkerReport {
        let _ = self.stop.send(());
        tokio::time::timeout(STOP_TIMEOUT, self.task)
            .await
            .unwrap_or_else(|_| {
                panic!("the worker did not stop within {STOP_TIMEOUT:?} of the shutdown request")
            })
            .expect("worker task")
            .expect("worker run")
    }
}

/// Longest a worker may take to shut down in a test: its grace period plus recording and releasing. Tests use
/// graces of at most a few seconds.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest one conformance test may run before it fails with its name (a deadline or shutdown regression
/// would otherwise hang CI until its global limit).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs one test body under [`TEST_TIMEOUT`], failing with the test's name and engine when it hangs.
pub async fn bounded(name: &str, engine: Engine, test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("{name} on {engine:?} did not finish within {TEST_TIMEOUT:?}");
    }
}

/// Like [`conformance!`], for behaviour that exists only on PostgreSQL (its planner, for example).
#[macro_export]
macro_rules! postgres_only {
    ($($name:ident),* $(,)?) => {
        mod sqlx_pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let engine = $crate::support::Engine::Sqlx;
                    $crate::support::bounded(stringify!($name), engine, super::$name(engine)).await
                }
            )*
        }
        mod tokio_pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let engine = $crate::support::Engine::TokioPostgres;
                    $crate::support::bounded(stringify!($name), engine, super::$name(engine)).await
                }
            )*
        }
    };
}

/// Generates one `#[tokio::test]` per engine for each named async fn taking an [`Engine`].
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $crate::postgres_only!($($name),*);
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let engine = $crate::support::Engine::Sqlite;
                    $crate::support::bounded(stringify!($name), engine, super::$name(engine)).await
                }
            )*
        }
    };
}
