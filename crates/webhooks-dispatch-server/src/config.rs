//! Configuration in two stages, as in ripgrep: [`RawSettings`] is what the user typed — command-line flags,
//! `WEBHOOKS_DISPATCH_*` environment variables (clap's `env`), and an optional TOML file — with every field
//! optional; [`Config`] is the resolved, validated result with defaults filled in.
//!
//! Precedence: flags > environment > file > defaults. Clap already folds flags over the environment, so
//! resolving is one `or` per field ([`RawSettings::or`]) and one validation pass ([`Config::resolve`]).
//!
//! Secrets (API keys, the database password) never appear in `Debug` output, help text or error messages.

use crate::listen::{
    ServerLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_REQUEST_TIMEOUT,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::database::DatabaseUrl;
use crate::Error;

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

    /// Longest sleep between two looks at the queue, e.g. 500ms, 1s [default: 1s].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_POLL_INTERVAL",
        value_name = "DURATION",
        global = true
    )]
    pub poll_interval: Option<String>,

    /// Absolute deadline of one delivery attempt (DNS, connect, TLS, response head) [default: 10s].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_ATTEMPT_TIMEOUT",
        value_name = "DURATION",
        global = true
    )]
    pub attempt_timeout: Option<String>,

    /// Time in-flight attempts get to finish at shutdown [default: 15s].
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
    /// e.g. 5d or 36h; `off` never does [default: 5d].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_DISABLE_FAILING_AFTER",
        value_name = "DURATION|off",
        global = true
    )]
    pub disable_failing_after: Option<String>,

    /// The API's limit on receiving a request head, also closing idle keep-alive connections
    /// [default: 10s].
    #[arg(
        long,
        env = "WEBHOOKS_DISPATCH_HEADER_READ_TIMEOUT",
        value_name = "DURATION",
        global = true
    )]
    pub header_read_timeout: Option<String>,

    /// The API's limit on one request, body included; slower ones are answered 408 [default: 30s].
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
    /// Reads a TOML file. Parse errors keep their line number but not the quoted values, which could be
    /// secrets (an API key written where a number was expected).
    pub fn from_file(path: &Path) -> Result<RawSettings, Error> {
        let file_error = |message: String| Error::ConfigFile {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        RawSettings::from_toml_str(&text).map_err(file_error)
    }

    /// Parses the text of a TOML file as [`RawSettings::from_file`] does (the fuzz target for the loader
    /// starts here); the error is the message it reports, with the line number and without quoted values.
    pub fn from_toml_str(text: &str) -> Result<RawSettings, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = elide_quoted(e.message());
            match line {
                Some(n) => format!("line {n}: {message}"),
                None => message,
            }
        })
    }

    /// Field by field, `self` where set, else `lower`: flags and environment (`self`) over the file.
    pub fn or(self, lower: RawSettings) -> RawSettings {
        RawSettings {
            config: self.config.or(lower.config),
            listen: self.listen.or(lower.listen),
            database_url: self.database_url.or(lower.database_url),
            database_max_connections: self.database_max_connections.or(lower.database_max_connections),
            api_keys: self.api_keys.or(lower.api_keys),
            insecure_no_auth: self.insecure_no_auth || lower.insecure_no_auth,
            concurrency: self.concurrency.or(lower.concurrency),
            per_endpoint_concurrency: self.per_endpoint_concurrency.or(lower.per_endpoint_concurrency),
            poll_interval: self.poll_interval.or(lower.poll_interval),
            attempt_timeout: self.attempt_timeout.or(lower.attempt_timeout),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
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

// Hand-written so API keys and the database password can never reach a log through `{:?}`.
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
    /// Serve `/v1` without authentication.
    pub insecure_no_auth: bool,
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
}

impl Config {
    /// Applies defaults and validates every setting, naming the setting in each error.
    pub fn resolve(raw: RawSettings) -> Result<Config, Error> {
        let bad = |setting: &str, why: String| Error::Config(format!("{setting}: {why}"));
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            bad(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080 or [::1]:8080"),
            )
        })?;
        let database_url = raw
            .database_url
            .as_deref()
            .unwrap_or(DEFAULT_DATABASE_URL)
            .parse::<DatabaseUrl>()
            .map_err(|why| bad("database_url", why))?;
        let api_keys = raw.api_keys.unwrap_or_default();
        for (i, key) in api_keys.iter().enumerate() {
            // Keys are named by position: the value itself must never be printed.
            let n = i + 1;
            if key.chars().count() < MIN_API_KEY_CHARS {
                return Err(bad(
                    "api_keys",
                    format!("key #{n} is shorter than {MIN_API_KEY_CHARS} characters"),
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "api_keys",
                    format!("key #{n} must be printable ASCII without spaces"),
                ));
            }
        }
        if raw.insecure_no_auth && !api_keys.is_empty() {
            return Err(bad(
                "insecure_no_auth",
                "given together with API keys; drop one of them".to_owned(),
            ));
        }
        let positive = |setting: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(bad(setting, "must be at least 1".to_owned())),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let allow_net = raw
            .allow_net
            .unwrap_or_default()
            .iter()
            .map(|s| {
                s.trim()
                    .parse::<IpNet>()
                    .map_err(|_| bad("allow_net", format!("{s:?} is not a network like 10.0.0.0/8")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &raw.ca_file {
            if !path.is_file() {
                return Err(bad(
                    "ca_file",
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if let Some(owner) = &raw.operational_owner {
            // The library would refuse the same owner id at the first event; refusing it at start-up
            // names the setting instead of logging a dispatch error per event.
            if owner.trim().is_empty() || owner.chars().count() > webhooks_dispatch::MAX_OWNER_ID_CHARS {
                return Err(bad(
                    "operational_owner",
                    format!(
                        "must be a non-blank owner id of at most {} characters",
                        webhooks_dispatch::MAX_OWNER_ID_CHARS
                    ),
                ));
            }
        }
        Ok(Config {
            listen,
            database_url,
            database_max_connections: match raw.database_max_connections {
                Some(0) => return Err(bad("database_max_connections", "must be at least 1".to_owned())),
                Some(n) => n,
                None => DEFAULT_DATABASE_MAX_CONNECTIONS,
            },
            api_keys: ApiKeys(api_keys),
            insecure_no_auth: raw.insecure_no_auth,
            worker: true,
            concurrency: positive(
                "concurrency",
                raw.concurrency,
                webhooks_dispatch::DEFAULT_CONCURRENCY,
            )?,
            per_endpoint_concurrency: positive(
                "per_endpoint_concurrency",
                raw.per_endpoint_concurrency,
                DEFAULT_PER_ENDPOINT_CONCURRENCY,
            )?,
            poll_interval: duration(
                "poll_interval",
                raw.poll_interval,
                webhooks_dispatch::DEFAULT_POLL_INTERVAL,
            )?,
            attempt_timeout: duration(
                "attempt_timeout",
                raw.attempt_timeout,
                webhooks_dispatch::DEFAULT_ATTEMPT_TIMEOUT,
            )?,
            shutdown_grace: duration(
                "shutdown_grace",
                raw.shutdown_grace,
                webhooks_dispatch::DEFAULT_SHUTDOWN_GRACE,
            )?,
            body_limit: positive("body_limit", raw.body_limit, DEFAULT_BODY_LIMIT)?,
            log_format: raw.log_format.unwrap_or_default(),
            allow_net,
            ca_file: raw.ca_file,
            operational_owner: raw.operational_owner,
            disable_failing_after: match raw.disable_failing_after.as_deref().map(str::trim) {
                Some("off") => None,
                other => Some(duration(
                    "disable_failing_after",
                    other.map(str::to_owned),
                    webhooks_dispatch::DEFAULT_DISABLE_FAILING_AFTER,
                )?),
            },
            on_gone: raw.on_gone.unwrap_or_default(),
            server_limits: ServerLimits {
                header_read_timeout: duration(
                    "header_read_timeout",
                    raw.header_read_timeout,
                    DEFAULT_HEADER_READ_TIMEOUT,
                )?,
                request_timeout: duration("request_timeout", raw.request_timeout, DEFAULT_REQUEST_TIMEOUT)?,
                max_connections: positive("max_connections", raw.max_connections, DEFAULT_MAX_CONNECTIONS)?,
            },
        })
    }

    /// The extra check for serving the HTTP API: without keys, only an explicit `--insecure-no-auth` will do.
    pub fn check_serve(&self) -> Result<(), Error> {
        if self.api_keys.is_empty() && !self.insecure_no_auth {
            return Err(Error::Config(
                "api_keys: serving the API needs at least one API key (--api-key or \
                 WEBHOOKS_DISPATCH_API_KEYS), or --insecure-no-auth to run without authentication"
                    .to_owned(),
            ));
        }
        Ok(())
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

/// Parses `500ms`, `10s`, `2m`, `1h`, `5d` (a whole number and a unit; no unit is an error, so `10` cannot be
/// misread as milliseconds or seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 10s, 2m or 1h"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(format!("{text:?} is not a duration like 500ms, 10s, 2m or 1h")),
    };
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

fn duration(setting: &str, raw: Option<String>, default: Duration) -> Result<Duration, Error> {
    match raw {
        Some(text) => parse_duration(&text).map_err(|why| Error::Config(format!("{setting}: {why}"))),
        None => Ok(default),
    }
}

/// Replaces every double-quoted part of a parser message with `"…"`.
fn elide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
