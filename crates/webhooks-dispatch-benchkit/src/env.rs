//! The benchmark's world: one PostgreSQL server (a durable throwaway cluster, or `DATABASE_URL`), a fresh
//! database per measurement, loopback HTTPS receivers signed by a throwaway CA, and the dispatcher
//! configuration every scenario shares.
//!
//! Nothing here can reach beyond 127.0.0.0/8: the only host name in use, `receiver.test`, resolves through a
//! static map to 127.0.0.1, the dispatcher's SSRF allowlist admits only 127.0.0.1/32, and the cluster and
//! receivers bind 127.0.0.1.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor as _};
use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::store::Executor;
use webhooks_dispatch::{
    Dispatcher, DispatcherBuilder, KeyRing, MasterKey, NewEndpoint, NewEvent, NewMessage,
};
use webhooks_dispatch_testkit::pg::{require_loopback, ClusterOptions, PgCluster};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, Reply, TestCa};

use crate::cpu::Meter;
use crate::pgstats::StatementStats;

/// Errors are reported per scenario, so a boxed error is all the detail the program needs.
pub type BoxError = Box<dyn Error + Send + Sync>;
/// Result of one benchmark step.
pub type Result<T> = std::result::Result<T, BoxError>;

/// An error with its sources, `: `-separated. The library's errors keep the driver's message as their source
/// (a storage error says only "storage error"), and a benchmark that failed must say why.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The host name every endpoint URL uses; resolved by a static map, never by DNS.
pub const RECEIVER_HOST: &str = "receiver.test";
/// Endpoints per scenario, as the brief fixes them.
pub const ENDPOINTS: usize = 100;
/// Event type of every benchmark message (endpoints subscribe to all types).
pub const EVENT_TYPE: &str = "invoice.paid";
/// Owner of every endpoint an event is fanned out to (other scenarios give each endpoint its own owner).
pub const EVENT_OWNER: &str = "customer_fan_out";

/// Worker and dispatcher settings shared by every delivery scenario, printed with the results.
#[derive(Clone, Debug, Serialize)]
pub struct Tuning {
    /// Deliveries in flight per worker (`DispatcherBuilder::concurrency`).
    pub concurrency: usize,
    /// Most deliveries in flight per endpoint per worker (`per_endpoint_concurrency`).
    pub per_endpoint: usize,
    /// Most rows per claim statement (`Worker::claim_batch`).
    pub claim_batch: u32,
    /// Longest sleep between looks at the table (`Worker::poll_interval`), in milliseconds.
    pub poll_interval_ms: u64,
    /// Deadline of one attempt (`attempt_timeout`), in milliseconds.
    pub attempt_timeout_ms: u64,
    /// Time in-flight attempts get at shutdown (`Worker::shutdown_grace`), in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Connections in each worker's sqlx pool.
    pub worker_pool_size: u32,
}

impl Tuning {
    /// Builds a dispatcher with these settings on `executor` (a pool, or a SQLite file), wired to the loopback
    /// receivers.
    pub fn dispatcher<E: Executor>(&self, env: &Env, executor: E) -> Dispatcher<E> {
        // Every endpoint here is on one loopback receiver, where in production each customer's would be on
        // its own host: the per-host cap (a guard against one shared receiver hanging) is lifted to the
        // concurrency so it does not stand in for a limit production would not have. The per-owner cap stays
        // at its default (each endpoint has its own owner, except in fan-out and the tarpit scenario).
        env.builder(executor)
            .concurrency(self.concurrency)
            .per_endpoint_concurrency(self.per_endpoint)
            .per_host_concurrency(self.concurrency)
            .attempt_timeout(Duration::from_millis(self.attempt_timeout_ms))
            .build()
    }
}

/// The server, CA and resolver shared by all scenarios. Dropping it stops the cluster (if we started one).
pub struct Env {
    /// The throwaway cluster, if we started one: stopped and removed when dropped.
    cluster: Option<PgCluster>,
    admin: PgConnectOptions,
    /// The admin URL as given, from which [`Env::database_url`] derives per-database URLs for the service.
    admin_url: String,
    /// Signs every receiver's certificate; the dispatchers trust only this CA.
    pub ca: TestCa,
    resolver: StaticResolver,
    next_db: AtomicU32,
    created: std::sync::Mutex<Vec<String>>,
    /// CPU accounting for this process, our server and the rest of the machine.
    pub meter: Meter,
    pg_stats: bool,
    /// Leave every database in place for inspection (useful only with `DATABASE_URL`).
    pub keep_databases: bool,
    /// Seals every endpoint key, as a production dispatcher's ring does, so each claim's opening of its keys
    /// is in every figure.
    pub ring: Arc<KeyRing>,
}

/// A database created for one measurement, dropped again by [`Env::drop_database`].
pub struct Database {
    /// Its name on the server.
    pub name: String,
    /// Connection options (the admin user on this database).
    pub options: PgConnectOptions,
}

impl Env {
    /// Uses `DATABASE_URL` when set (it must point at this machine, as the testkit's `require_loopback`
    /// decides: the benchmark sends nothing beyond loopback); otherwise starts a durable throwaway cluster
    /// (fsync and synchronous_commit on, as in production). `pg_stats` preloads `pg_stat_statements` for the
    /// optional per-statement diagnostics. Blocking: call before entering the runtime.
    pub fn start(pg_stats: bool) -> Result<Env> {
        let (cluster, url) = match std::env::var("DATABASE_URL") {
            Ok(url) => {
                // The same guard as the tests': the benchmark sends nothing beyond loopback.
                require_loopback(&url).map_err(|e| format!("DATABASE_URL refused: {e}"))?;
                (None, url)
            }
            Err(_) => {
                let mut extra_settings = Vec::new();
                if pg_stats {
                    extra_settings.push((
                        "shared_preload_libraries".to_owned(),
                        "pg_stat_statements".to_owned(),
                    ));
                }
                let cluster = PgCluster::start(ClusterOptions {
                    durable: true,
                    extra_settings,
                    ..Default::default()
                })?;
                let url = cluster.admin_url();
                (Some(cluster), url)
            }
        };
        let admin = PgConnectOptions::from_str(&url)?.disable_statement_logging();
        let resolver = StaticResolver::new();
        resolver.insert(RECEIVER_HOST, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let meter = Meter::new(cluster.as_ref().map(PgCluster::dir));
        let ring = Arc::new(KeyRing::new(MasterKey::generate("bench")?));
        Ok(Env {
            ring,
            meter,
            pg_stats,
            keep_databases: false,
            cluster,
            admin,
            admin_url: url,
            ca: TestCa::new(),
            resolver,
            next_db: AtomicU32::new(0),
            created: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Whether the server is a cluster this process started (and will remove).
    pub fn owns_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A new empty database, named after the measurement, so no scenario sees another's rows or bloat.
    pub async fn fresh_database(&self, label: &str) -> Result<Database> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("wdbench_{}_{n}_{label}", std::process::id());
        let mut admin = sqlx::PgConnection::connect_with(&self.admin).await?;
        // The name is built from our pid, a counter and a fixed label: no outside input reaches this SQL.
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await?;
        admin.close().await?;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let options = self.admin.clone().database(&name);
        if self.pg_stats {
            // The view lives in the database that created the extension; the counters are server-wide.
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await?;
            conn.close().await?;
        }
        Ok(Database { name, options })
    }

    /// Drops a database once its pools are closed, so a long run does not fill the disk (the 1M-row table).
    pub async fn drop_database(&self, db: &Database) -> Result<()> {
        if self.keep_databases {
            return Ok(());
        }
        let mut admin = sqlx::PgConnection::connect_with(&self.admin).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name).as_str())
            .await?;
        admin.close().await?;
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n| n != &db.name);
        Ok(())
    }

    /// Drops every database this run created and has not dropped yet (after a failed scenario). Matters only
    /// with `DATABASE_URL`: our own cluster disappears as a whole.
    pub async fn drop_leftovers(&self) {
        if self.keep_databases {
            return;
        }
        let names = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for name in names {
            let db = Database {
                options: self.admin.clone().database(&name),
                name,
            };
            if let Err(e) = self.drop_database(&db).await {
                eprintln!("warning: could not drop database {}: {e}", db.name);
            }
        }
    }

    /// A `postgres://` URL for `db` (the admin URL with its database replaced), for the in-process service.
    pub fn database_url(&self, db: &Database) -> Result<String> {
        url_with_database(&self.admin_url, &db.name)
    }

    /// A sqlx pool on `db`. `synchronous_commit_off` sets that per connection (the optional, non-durable
    /// variant); everything else runs with the server's durable defaults.
    pub async fn pool(&self, db: &Database, size: u32, synchronous_commit_off: bool) -> Result<PgPool> {
        let mut options = db.options.clone();
        if synchronous_commit_off {
            options = options.options([("synchronous_commit", "off")]);
        }
        Ok(PgPoolOptions::new()
            .max_connections(size)
            .min_connections(size.min(4))
            .connect_with(options)
            .await?)
    }

    /// Claim/complete statement counters on `pool`'s database, when `--pg-stats` is on.
    pub async fn statement_stats(&self, pool: &PgPool) -> Option<StatementStats> {
        match self.pg_stats {
            true => StatementStats::read(pool).await,
            false => None,
        }
    }

    /// A connection to the maintenance database, for server facts (version, settings).
    pub async fn admin_connection(&self) -> Result<sqlx::PgConnection> {
        Ok(sqlx::PgConnection::connect_with(&self.admin).await?)
    }

    /// A loopback HTTPS receiver (h2 and HTTP/1.1) with a certificate for `receiver.test` from our CA.
    pub async fn receiver(&self, reply: Reply) -> Result<Receiver> {
        let receiver = Receiver::start(&self.ca, ReceiverOptions::default()).await?;
        receiver.set_default_reply(reply);
        Ok(receiver)
    }

    /// The dispatcher configuration for loopback delivery: static resolver, only 127.0.0.1/32 allowed,
    /// only the benchmark CA trusted.
    pub fn builder<E>(&self, executor: E) -> DispatcherBuilder<E> {
        Dispatcher::builder(executor)
            .resolver(Arc::new(self.resolver.clone()))
            .allow_net("127.0.0.1/32".parse().expect("valid network literal"))
            .root_certificates(self.ca.root_store())
            .secret_cipher(self.ring.clone())
    }
}

/// `admin_url` pointing at database `name` instead. A `dbname` query parameter would override the path, so it
/// goes; every other parameter (`host=`, `sslmode=`, …) stays.
fn url_with_database(admin_url: &str, name: &str) -> Result<String> {
    let mut url = url::Url::parse(admin_url)?;
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "dbname")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_path(&format!("/{name}"));
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    Ok(url.to_string())
}

/// Endpoint URL number `i` on a receiver: one distinct path per endpoint, all on `receiver.test`.
pub fn endpoint_url(port: u16, i: usize) -> String {
    format!("https://{RECEIVER_HOST}:{port}/e{i}")
}

/// Creates the tables and registers one endpoint per URL; returns their ids in order.
pub async fn setup_endpoints<E: Executor>(d: &Dispatcher<E>, urls: &[String]) -> Result<Vec<String>> {
    d.migrate().await?;
    register_endpoints(d, urls).await
}

/// Registers one endpoint per URL, each of its own owner; returns their ids in order.
pub async fn register_endpoints<E: Executor>(d: &Dispatcher<E>, urls: &[String]) -> Result<Vec<String>> {
    register(d, urls, |i| format!("customer_{i}")).await
}

/// Registers one endpoint per URL, all of `owner`, so that one event of `owner` goes to every one of them;
/// returns their ids in order.
pub async fn register_owned_endpoints<E: Executor>(
    d: &Dispatcher<E>,
    owner: &str,
    urls: &[String],
) -> Result<Vec<String>> {
    register(d, urls, |_| owner.to_owned()).await
}

/// Registers one endpoint per URL, endpoint `i` of `owner(i)`; returns their ids in order.
pub async fn register_endpoints_by<E: Executor>(
    d: &Dispatcher<E>,
    urls: &[String],
    owner: impl Fn(usize) -> String,
) -> Result<Vec<String>> {
    register(d, urls, owner).await
}

async fn register<E: Executor>(
    d: &Dispatcher<E>,
    urls: &[String],
    owner: impl Fn(usize) -> String,
) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        let ep = d
            .register_endpoint(NewEndpoint::new(owner(i), url.clone()))
            .await?;
        ids.push(ep.id);
    }
    Ok(ids)
}

/// Enqueues one message per entry of `targets` (indexes into `endpoints`), 500 per `dispatch_many` call.
/// Setup for the delivery scenarios, not itself measured.
pub async fn enqueue_all<E: Executor>(
    d: &Dispatcher<E>,
    endpoints: &[String],
    targets: &[usize],
) -> Result<()> {
    for (chunk_no, chunk) in targets.chunks(500).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(k, &ep)| NewMessage::new(&endpoints[ep], EVENT_TYPE, payload((chunk_no * 500 + k) as u64)))
            .collect();
        d.dispatch_many(batch).await?;
    }
    Ok(())
}

/// Dispatches `events` events of [`EVENT_OWNER`] (event `k` with [`payload`]`(k)`), 500 per `dispatch_events`
/// call, and checks that each went to all `endpoints` endpoints of that owner. Setup for the fan-out delivery
/// measurement, not itself measured.
pub async fn enqueue_events<E: Executor>(d: &Dispatcher<E>, events: usize, endpoints: usize) -> Result<()> {
    for start in (0..events).step_by(500) {
        let batch = (start..(start + 500).min(events))
            .map(|k| NewEvent::new(EVENT_OWNER, EVENT_TYPE, payload(k as u64)))
            .collect();
        for event in d.dispatch_events(batch).await? {
            // A short fan-out would leave the measurement waiting for messages that were never written.
            if event.messages.len() != endpoints || !event.skipped.is_empty() {
                return Err(format!(
                    "event {} went to {} endpoints and skipped {}, expected {endpoints} and none",
                    event.event_id,
                    event.messages.len(),
                    event.skipped.len()
                )
                .into());
            }
        }
    }
    Ok(())
}

/// A realistic event body of about 300 bytes of JSON (the brief's payload size).
pub fn payload(i: u64) -> serde_json::Value {
    serde_json::json!({
        "type": EVENT_TYPE,
        "id": format!("evt_{i:016}"),
        "created": 1_767_225_600 + i,
        "data": {
            "invoice": format!("in_{i:012}"),
            "customer": format!("cus_{:08}", i % 10_007),
            "amount_due": 12_900 + (i % 1000),
            "currency": "eur",
            "status": "paid",
            "lines": [{"sku": "plan-pro-monthly", "quantity": 1, "amount": 12_900}],
            "description": "Pro plan, monthly subscription renewal",
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_urls_name_the_measurement_database_and_keep_the_rest() {
        let url =
            super::url_with_database("postgres://postgres@127.0.0.1:5433/postgres", "wdbench_1").unwrap();
        assert_eq!(url, "postgres://postgres@127.0.0.1:5433/wdbench_1");
        let url = super::url_with_database("postgres://u:pw@localhost?dbname=app&host=/run/pg", "b").unwrap();
        assert_eq!(url, "postgres://u:pw@localhost/b?host=%2Frun%2Fpg");
    }

    #[test]
    fn payload_is_about_300_bytes() {
        let len = serde_json::to_string(&super::payload(123_456)).unwrap().len();
        assert!((270..=330).contains(&len), "payload is {len} bytes");
    }
}
