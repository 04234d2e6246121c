//! Settings → [`Config`]: defaults applied, every setting validated, each error naming its setting.

use super::*;

impl Config {
    /// Applies defaults and validates every setting, naming the setting in each error.
    pub fn resolve(raw: RawSettings) -> Result<Config, Error> {
        let bad = |setting: &str, why: String| Error::Config(format!("{setting}: {why}"));
        let fairness = fairness::Fairness::resolve(&raw)?;
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
        let master_keys = KeySource::resolve(
            raw.master_keys.as_deref(),
            raw.master_keys_file.clone(),
            &database_url,
        )?;
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
        if raw.insecure_no_auth && raw.metrics_require_key {
            return Err(bad(
                "metrics_require_key",
                "needs API keys, so it cannot be combined with insecure_no_auth".to_owned(),
            ));
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
            api_key_file: raw.api_key_file,
            insecure_no_auth: raw.insecure_no_auth,
            master_keys,
            key_ring: None,
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
                MAX_SHORT,
            )?,
            attempt_timeout: duration(
                "attempt_timeout",
                raw.attempt_timeout,
                webhooks_dispatch::DEFAULT_ATTEMPT_TIMEOUT,
                MAX_SHORT,
            )?,
            shutdown_grace: duration(
                "shutdown_grace",
                raw.shutdown_grace,
                webhooks_dispatch::DEFAULT_SHUTDOWN_GRACE,
                MAX_SHORT,
            )?,
            lease: match duration(
                "lease",
                raw.lease,
                webhooks_dispatch::DEFAULT_LEASE,
                Duration::MAX,
            )? {
                l if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&l) => l,
                _ => return Err(bad("lease", "must be between 1s and 24h".to_owned())),
            },
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
                    MAX_DISABLE_FAILING_AFTER,
                )?),
            },
            on_gone: raw.on_gone.unwrap_or_default(),
            server_limits: ServerLimits {
                header_read_timeout: duration(
                    "header_read_timeout",
                    raw.header_read_timeout,
                    DEFAULT_HEADER_READ_TIMEOUT,
                    MAX_SHORT,
                )?,
                request_timeout: duration(
                    "request_timeout",
                    raw.request_timeout,
                    DEFAULT_REQUEST_TIMEOUT,
                    MAX_SHORT,
                )?,
                max_connections: positive("max_connections", raw.max_connections, DEFAULT_MAX_CONNECTIONS)?,
            },
            metrics_refresh: duration(
                "metrics_refresh",
                raw.metrics_refresh,
                crate::metrics::DEFAULT_BACKLOG_REFRESH,
                MAX_SHORT,
            )?,
            metrics_require_key: raw.metrics_require_key,
            fairness,
            resolver: None,
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
