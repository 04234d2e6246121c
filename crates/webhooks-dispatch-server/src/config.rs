//! Configuration in two stages, as in ripgrep: [`RawSettings`] is what the user typed — command-line flags,
//! `WEBHOOKS_DISPATCH_*` environment variables (clap's `env`), and an optional TOML file — with every field
//! optional; [`Config`] is the resolved, validated result with defaults filled in.
//!
//! Precedence: flags > environment > file > defaults. Clap already folds flags over the environment, so
//! resolving is one `or` per field ([`RawSettings::or`]) and one validation pass ([`Config::resolve`]).
//!
//! Secrets (API keys, the database password, the master keys) never appear in `Debug` output, help text or error messages.

use crate::listen::{
    ServerLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::database::DatabaseUrl;
use crate::Error;

mod duration;
mod fairness;
mod file;
pub mod keyring;
mod resolve;

use duration::{duration, MAX_DISABLE_FAILING_AFTER, MAX_SHORT};
pub use duration::{parse_duration, parse_duration_or_zero};
pub use keyring::KeySource;

/// Default listen address: loopback only, so a fresh install is not reachable from the network by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default database when none is configured: an embedded SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://webhooks-dispatch.db";
/// Default largest accepted request body (1 MiB; a 256 KiB payload plus room for batches).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default PostgreSQL pool size. The worker records outcomes in bulk, so a few connections go a long way.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 16;
/// Default deliveries in flight per endpoint: the library's default.
pub const DEFAULT_PER_ENDPOINT_CONCURRENCY: usize = webhooks_dispatch::DEFAULT_PER_ENDPOINT_CONCURRENCY;
/// Shortest accepted API key. Keys are bearer credentials compared in constant time; short ones could be
/// guessed, so a typo like an empty variable is refused rather than silently accepted.
pub const MIN_API_KEY_CHARS: usize = 16;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Settings as given, every one optional. Parsed from flags and environment by clap, and from the TOML file
/// by serde (same field names, snake_case: `listen = "0.0.0.0:8080"`, `api_keys = ["…"]`).
#[derive(Clone, Default, clap::Args, Deserialize)]
#[command(next_help_heading = "Settings")]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// TOML configuration file (lower precedence than flags and environment).
    #[arg(long, env = "WEBHOOKS_DISPATCH_CONFIG", value_name = "PATH", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_LISTEN",
        value_name = "HOST:PORT",
        global = true
    )]
    pub listen: Option<String>,

    /// postgres://… or sqlite://PATH [default: sqlite://webhooks-dispatch.db]. Prefer the environment
    /// variable: command lines are visible to other users of the machine.
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        global = true
    )]
    pub database_url: Option<String>,

    /// Most PostgreSQL connections in the pool [default: 16].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_DATABASE_MAX_CONNECTIONS",
        value_name = "N",
        global = true
    )]
    pub database_max_connections: Option<u32>,

    /// Bearer API key accepted by the HTTP API; repeat for several (the environment variable takes a
    /// comma-separated list). At least 16 characters each.
    #[arg(
        long = "api-key",
        env = "WEBHOOKS_DISPATCH_API_KEYS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "KEY",
        global = true
    )]
    pub api_keys: Option<Vec<String>>,

    /// Where `serve` writes the API key it generates when none is configured (mode 0600, replaced on each
    /// run) [default: webhooks-dispatch.api-key beside the SQLite file, or in the working directory]. Without
    /// it the key is shown on stderr when that is a terminal, and written to the default file otherwise.
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_API_KEY_FILE",
        value_name = "PATH",
        global = true
    )]
    pub api_key_file: Option<PathBuf>,

    /// The master key ring that seals endpoint secrets at rest: `id:base64` keys (32 bytes each) separated
    /// by commas or newlines, the first sealing, the others only opening. Prefer the environment variable or
    /// a key file: command lines are visible to other users of the machine. `keys generate` prints a key.
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_MASTER_KEYS",
        hide_env_values = true,
        value_name = "RING",
        global = true
    )]
    pub master_keys: Option<String>,

    /// File (mode 0600) holding the master key ring, when `master_keys` is not given [default with SQLite:
    /// the database file's path plus `.keys`, created with one generated key on first start; none with
    /// PostgreSQL, which then needs one of the two].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_MASTER_KEYS_FILE",
        value_name = "PATH",
        global = true
    )]
    pub master_keys_file: Option<PathBuf>,

    /// Serve the API without authentication. Only for local experiments; must be given explicitly (flag or
    /// environment), never from the file.
    #[arg(long, env = "WEBHOOKS_DISPATCH_INSECURE_NO_AUTH", global = true)]
    #[serde(skip)]
    pub insecure_no_auth: bool,

    /// Deliveries in flight at once in this process [default: 256].
    #[arg(long, env = "WEBHOOKS_DISPATCH_CONCURRENCY", value_name = "N", global = true)]
    pub concurrency: Option<usize>,

    /// Deliveries in flight to one endpoint at once [default: 16].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_PER_ENDPOINT_CONCURRENCY",
        value_name = "N",
        global = true
    )]
    pub per_endpoint_concurrency: Option<usize>,

    /// Most deliveries in flight to all the endpoints of one owner together [default: half of concurrency].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_PER_OWNER_CONCURRENCY",
        value_name = "N",
        global = true
    )]
    pub per_owner_concurrency: Option<usize>,

    /// Most deliveries in flight to one destination host [default: half of concurrency].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_PER_HOST_CONCURRENCY",
        value_name = "N",
        global = true
    )]
    pub per_host_concurrency: Option<usize>,

    /// Transient failures in a row after which an endpoint is held back, new messages too, or "off" [default: 3].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_HOLD_BACK_AFTER",
        value_name = "N|off",
        global = true
    )]
    pub hold_back_after: Option<String>,

    /// Longest hold of a failing endpoint (the first is 1s, doubling per failure) [default: 1m; at most 1d].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_HOLD_BACK_MAX",
        value_name = "DURATION",
        global = true
    )]
    pub hold_back_max: Option<String>,

    /// Bound on TCP connect and on the TLS handshake, inside the attempt timeout [default: 3s; at most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_CONNECT_TIMEOUT",
        value_name = "DURATION",
        global = true
    )]
    pub connect_timeout: Option<String>,

    /// Longest sleep between two looks at the queue, e.g. 500ms, 1s [default: 1s; at most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_POLL_INTERVAL",
        value_name = "DURATION",
        global = true
    )]
    pub poll_interval: Option<String>,

    /// Absolute deadline of one delivery attempt (DNS, connect, TLS, response head) [default: 10s; at
    /// most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_ATTEMPT_TIMEOUT",
        value_name = "DURATION",
        global = true
    )]
    pub attempt_timeout: Option<String>,

    /// How long a worker's claim lasts without renewal; a crashed worker's messages are retried after it
    /// [default: 10s; 1s to 24h].
    #[arg(long, env = "WEBHOOKS_DISPATCH_LEASE", value_name = "DURATION", global = true)]
    pub lease: Option<String>,

    /// Time in-flight attempts get to finish at shutdown [default: 15s; at most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_SHUTDOWN_GRACE",
        value_name = "DURATION",
        global = true
    )]
    pub shutdown_grace: Option<String>,

    /// Largest accepted request body in bytes; larger requests get 413 [default: 1048576].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_BODY_LIMIT",
        value_name = "BYTES",
        global = true
    )]
    pub body_limit: Option<usize>,

    /// Log format [default: human]. The filter comes from RUST_LOG.
    #[arg(long, env = "WEBHOOKS_DISPATCH_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,

    /// Private network endpoints may be delivered to, e.g. 10.1.0.0/16 (repeatable; comma-separated in the
    /// environment). RISK: anyone who can register an endpoint can then make this service send requests
    /// into that network (SSRF). Allow only networks that hold webhook receivers and nothing else.
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_ALLOW_NET",
        value_delimiter = ',',
        value_name = "CIDR",
        global = true
    )]
    pub allow_net: Option<Vec<String>>,

    /// PEM file of extra certificate authorities trusted for endpoint TLS, in addition to the public
    /// (Mozilla) roots — for receivers behind an internal CA.
    #[arg(long, env = "WEBHOOKS_DISPATCH_CA_FILE", value_name = "PATH", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Owner id that receives operational webhooks (endpoint.created, endpoint.disabled, …,
    /// message.attempt.exhausted) about every other owner's endpoints; operators subscribe by registering
    /// endpoints for it [default: none, no operational events].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_OPERATIONAL_OWNER",
        value_name = "OWNER_ID",
        global = true
    )]
    pub operational_owner: Option<String>,

    /// Disable an endpoint (reason failing) after this long without a delivery while its messages go dead,
    /// e.g. 5d or 36h, at most 3650d; `off` never does [default: 5d].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_DISABLE_FAILING_AFTER",
        value_name = "DURATION|off",
        global = true
    )]
    pub disable_failing_after: Option<String>,

    /// The API's limit on receiving a request head, also closing idle keep-alive connections
    /// [default: 10s; at most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_HEADER_READ_TIMEOUT",
        value_name = "DURATION",
        global = true
    )]
    pub header_read_timeout: Option<String>,

    /// The API's limit on one request, body included; slower ones are answered 408 [default: 30s;
    /// at most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_REQUEST_TIMEOUT",
        value_name = "DURATION",
        global = true
    )]
    pub request_timeout: Option<String>,

    /// API connections open at once; more are closed on arrival [default: 512].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_MAX_CONNECTIONS",
        value_name = "N",
        global = true
    )]
    pub max_connections: Option<usize>,

    /// How old the backlog gauges of `/metrics` may get: the backlog is counted at most once per this
    /// interval, however often it is scraped [default: 5s; at most 1h].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_METRICS_REFRESH",
        value_name = "DURATION",
        global = true
    )]
    pub metrics_refresh: Option<String>,

    /// Serve `/metrics` only with an API key (`Authorization: Bearer`, the keys of `/v1`) [default: open,
    /// like the probes].
    #[arg(long, env = "WEBHOOKS_DISPATCH_METRICS_REQUIRE_KEY", global = true)]
    #[serde(default)]
    pub metrics_require_key: bool,

    /// What a 410 Gone answer does besides killing its message: `disable` the endpoint (the Standard
    /// Webhooks advice) or only `dead` [default: disable].
    #[arg(long, env = "WEBHOOKS_DISPATCH_ON_GONE", value_enum, global = true)]
    pub on_gone: Option<GoneSetting>,
}

/// The `on_gone` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GoneSetting {
    /// Disable the endpoint (reason `gone`).
    #[default]
    Disable,
    /// Only end the message as dead.
    Dead,
}

impl RawSettings {
    /// Field by field, `self` where set, else `lower`: flags and environment (`self`) over the file.
    pub fn or(self, lower: RawSettings) -> RawSettings {
        RawSettings {
            config: self.config.or(lower.config),
            listen: self.listen.or(lower.listen),
            database_url: self.database_url.or(lower.database_url),
            database_max_connections: self.database_max_connections.or(lower.database_max_connections),
            api_keys: self.api_keys.or(lower.api_keys),
            api_key_file: self.api_key_file.or(lower.api_key_file),
            master_keys: self.master_keys.or(lower.master_keys),
            master_keys_file: self.master_keys_file.or(lower.master_keys_file),
            insecure_no_auth: self.insecure_no_auth || lower.insecure_no_auth,
            concurrency: self.concurrency.or(lower.concurrency),
            per_endpoint_concurrency: self.per_endpoint_concurrency.or(lower.per_endpoint_concurrency),
            per_owner_concurrency: self.per_owner_concurrency.or(lower.per_owner_concurrency),
            per_host_concurrency: self.per_host_concurrency.or(lower.per_host_concurrency),
            hold_back_after: self.hold_back_after.or(lower.hold_back_after),
            hold_back_max: self.hold_back_max.or(lower.hold_back_max),
            connect_timeout: self.connect_timeout.or(lower.connect_timeout),
            poll_interval: self.poll_interval.or(lower.poll_interval),
            attempt_timeout: self.attempt_timeout.or(lower.attempt_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            lease: self.lease.or(lower.lease),
            body_limit: self.body_limit.or(lower.body_limit),
            log_format: self.log_format.or(lower.log_format),
            allow_net: self.allow_net.or(lower.allow_net),
            ca_file: self.ca_file.or(lower.ca_file),
            operational_owner: self.operational_owner.or(lower.operational_owner),
            disable_failing_after: self.disable_failing_after.or(lower.disable_failing_after),
            on_gone: self.on_gone.or(lower.on_gone),
            header_read_timeout: self.header_read_timeout.or(lower.header_read_timeout),
            request_timeout: self.request_timeout.or(lower.request_timeout),
            max_connections: self.max_connections.or(lower.max_connections),
            metrics_refresh: self.metrics_refresh.or(lower.metrics_refresh),
            metrics_require_key: self.metrics_require_key || lower.metrics_require_key,
        }
    }

    /// Flags and environment over the file named by `config` (if any), resolved and validated.
    pub fn load(self) -> Result<Config, Error> {
        let merged = match &self.config {
            Some(path) => {
                let file = RawSettings::from_file(path)?;
                self.or(file)
            }
            None => self,
        };
        Config::resolve(merged)
    }
}

// Hand-written so API keys, master keys and the database password can never reach a log through `{:?}`.
impl fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawSettings")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::database::redact_url),
            )
            .field("api_keys", &self.api_keys.as_ref().map(|k| ApiKeys(k.clone())))
            .field("master_keys", &self.master_keys.as_ref().map(|_| "[redacted]"))
            .field("master_keys_file", &self.master_keys_file)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish_non_exhaustive()
    }
}

/// The resolved configuration the service runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address (used by the binary to bind; [`crate::run`] takes a bound listener).
    pub listen: SocketAddr,
    /// Which database, and where.
    pub database_url: DatabaseUrl,
    /// PostgreSQL pool size.
    pub database_max_connections: u32,
    /// Accepted bearer keys; empty only with `insecure_no_auth`.
    pub api_keys: ApiKeys,
    /// Where a generated key is written, if set explicitly (else beside the SQLite file or in the working
    /// directory).
    pub api_key_file: Option<PathBuf>,
    /// Serve `/v1` without authentication.
    pub insecure_no_auth: bool,
    /// Where the master keys sealing endpoint secrets come from.
    pub master_keys: KeySource,
    /// The key ring once read ([`Config::load_key_ring`]); `None` from [`Config::resolve`]. Embedders may set
    /// it, as tests do.
    pub key_ring: Option<Arc<webhooks_dispatch::keyring::KeyRing>>,
    /// Whether `serve` also runs the delivery worker (`serve --no-worker` turns it off).
    pub worker: bool,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries in flight per endpoint.
    pub per_endpoint_concurrency: usize,
    /// Longest sleep between looks at the queue.
    pub poll_interval: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// Grace period for in-flight attempts at shutdown.
    pub shutdown_grace: Duration,
    /// A worker's lease, renewed while it holds a message (1s..=24h).
    pub lease: Duration,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Private networks deliveries may reach (the SSRF allowlist).
    pub allow_net: Vec<IpNet>,
    /// Extra trusted CAs for endpoint TLS.
    pub ca_file: Option<PathBuf>,
    /// The owner lifecycle events are dispatched to as operational webhooks; `None` turns them off.
    pub operational_owner: Option<String>,
    /// How long a failing endpoint may go without a delivery before it is disabled; `None`: never.
    pub disable_failing_after: Option<Duration>,
    /// What a 410 Gone does to its endpoint.
    pub on_gone: GoneSetting,
    /// The API server's timeouts and connection cap.
    pub server_limits: ServerLimits,
    /// Caps per owner and host, holding back failing endpoints, the connect timeout.
    pub fairness: fairness::Fairness,
    /// Longest the backlog gauges of `/metrics` are served from the last count.
    pub metrics_refresh: Duration,
    /// `/metrics` needs an API key.
    pub metrics_require_key: bool,
    /// How endpoint host names are resolved; `None` (what [`Config::resolve`] gives): the system resolver.
    pub resolver: Option<EndpointResolver>,
}

/// A resolver for endpoint host names — not a setting but a seam for embedders and tests, which must not
/// ask real DNS. `Debug` shows only that one is set.
#[derive(Clone)]
pub struct EndpointResolver(pub Arc<dyn webhooks_dispatch::ssrf::Resolver>);

impl fmt::Debug for EndpointResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointResolver(custom)")
    }
}

/// Bearer API keys. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys(pub Vec<String>);

impl ApiKeys {
    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} key(s) redacted]", self.0.len())
    }
}

#[cfg(test)]
mod tests;
