//! Choosing and opening the storage engine — the only place that knows which engines exist.
//!
//! [`open`] turns a [`DatabaseUrl`] into a [`Database`]: an [`Executor`] for the library, an optional factory
//! of LISTEN connections for the worker (engines without one wake their workers in memory, and poll).
//! Everything else in the service is engine-agnostic.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::Connection;
use webhooks_dispatch::store::rusqlite::SqliteExecutor;
use webhooks_dispatch::store::sqlx::SqlxListener;
use webhooks_dispatch::store::{BoxFuture, Executor, Listener};
use webhooks_dispatch::StorageError;

use crate::Error;

mod redact;

pub use redact::{redact_url, scrub};

/// Where the data lives. `Debug` and `Display` redact every password form ([`redact_url`]).
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `postgres://` or `postgresql://`, kept verbatim for the driver.
    Postgres(String),
    /// `sqlite://PATH` (relative to the working directory) or `sqlite:///absolute/path`.
    Sqlite(PathBuf),
}

impl FromStr for DatabaseUrl {
    type Err = String;

    /// Errors name the scheme, never the whole URL (which may hold a password).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let scheme = s.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default();
        match scheme {
            "postgres" | "postgresql" => {
                let url = url::Url::parse(s).map_err(|e| format!("not a valid {scheme}:// URL ({e})"))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{scheme}:// URL has no host"));
                }
                Ok(DatabaseUrl::Postgres(s.to_owned()))
            }
            "sqlite" => {
                let rest = &s["sqlite:".len()..];
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err("sqlite:// URL has no file path".to_owned());
                }
                Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
            }
            // The scheme is not echoed: what precedes the first `:` may be a password (`host=h password=a:b`).
            _ if redact::is_scheme(scheme) => {
                Err("unsupported scheme (expected postgres://… or sqlite://PATH)".to_owned())
            }
            _ => Err("expected postgres://… or sqlite://PATH".to_owned()),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(raw) => f.write_str(&redact_url(raw)),
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Opens a LISTEN connection for a worker.
pub type ListenerFactory =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Box<dyn Listener>, StorageError>> + Send + Sync>;

/// An open database, as the rest of the service sees it.
#[derive(Clone)]
pub struct Database {
    /// Runs the library's statements (a connection pool).
    pub executor: Arc<dyn Executor>,
    /// Wake-ups for the worker; `None` for engines without LISTEN/NOTIFY (the worker then polls).
    pub listener: Option<ListenerFactory>,
}

/// How long to wait for a pooled connection before a request fails with `storage` (and `/readyz` with 503),
/// rather than hanging while the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the database the URL names. Connects once, so a wrong URL or an unreachable server fails at
/// start-up with a clear message instead of on the first request.
pub async fn open(url: &DatabaseUrl, max_connections: u32) -> Result<Database, Error> {
    match url {
        DatabaseUrl::Postgres(raw) => {
            // The driver's reason is scrubbed of the URL's secrets too, in case one is ever quoted back.
            let failed = |reason: String| Error::Connect {
                url: url.to_string(),
                reason: scrub(&reason, raw),
            };
            let options: PgConnectOptions = only_known_parameters(raw)
                .parse()
                .map_err(|e: sqlx::Error| failed(e.to_string()))?;
            // One plain connection first: a pool that cannot connect reports only "pool timed out", while
            // this reports the reason (connection refused, authentication failed, no such database).
            match tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&options)).await {
                Ok(Ok(probe)) => {
                    let _ = probe.close().await;
                }
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(_) => return Err(failed(format!("no answer within {ACQUIRE_TIMEOUT:?}"))),
            }
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_lazy_with(options);
            let for_listener = pool.clone();
            let listener: ListenerFactory = Arc::new(move || {
                let pool = for_listener.clone();
                Box::pin(async move {
                    let l = SqlxListener::connect(&pool).await?;
                    Ok(Box::new(l) as Box<dyn Listener>)
                })
            });
            Ok(Database {
                executor: Arc::new(pool),
                listener: Some(listener),
            })
        }
        // SQLite serves one process: no LISTEN (workers in this process are woken in memory by the
        // dispatcher they share with the API).
        DatabaseUrl::Sqlite(path) => {
            let exec = SqliteExecutor::open(path).map_err(|e| Error::Connect {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            Ok(Database {
                executor: Arc::new(exec),
                listener: None,
            })
        }
    }
}

/// The query parameters sqlx 0.8 reads from a PostgreSQL URL (`sqlx_postgres::options::parse`), besides
/// `options[…]`.
const SQLX_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// `raw` without the query parameters sqlx does not read. sqlx ignores them anyway, but logs each one
/// *with its value* — an `sslpassword=` included — so they are dropped here, with a warning naming the key.
fn only_known_parameters(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    let known = |key: &str| SQLX_PARAMETERS.contains(&key) || key.starts_with("options[");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if pairs.iter().all(|(key, _)| known(key)) {
        return raw.to_owned();
    }
    for (key, _) in pairs.iter().filter(|(key, _)| !known(key)) {
        // A key is not a secret, but one with an odd shape may be a pasted value: named only when plain.
        let plain = key.len() <= 40
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let key = if plain { key.as_str() } else { "(unusual name)" };
        tracing::warn!(
            key,
            "ignoring a database URL parameter the PostgreSQL driver does not read"
        );
    }
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().filter(|(key, _)| known(key)));
    if url.query() == Some("") {
        url.set_query(None);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use webhooks_dispatch_testkit::PasswordForms;

    /// `password` in a connection string, written the `form`th of the ways PostgreSQL users write one.
    fn with_password(form: usize, password: &str) -> String {
        let userinfo = PasswordForms::in_userinfo(password);
        let query = PasswordForms::in_query(password);
        let quoted = PasswordForms::quoted(password);
        let unquoted: String = password
            .chars()
            .flat_map(|c| match c {
                '\\' | '\'' | ' ' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        match form % 10 {
            0 => format!("postgres://app:{userinfo}@db.internal:5432/hooks"),
            1 => format!("postgres://app@db.internal/hooks?sslmode=require&password={query}"),
            2 => format!("postgresql://app@db.internal/hooks?sslpassword={query}&application_name=x"),
            3 => format!("postgres://app@db.internal/hooks?PassWord={query}#frag"),
            4 => format!("postgres://app:{userinfo}@db.internal/hooks?password={query}#{query}"),
            5 => format!("host=/tmp user=x password={quoted}"),
            6 => format!("host=/tmp user=x password = {quoted} dbname=y"),
            7 => format!("password={unquoted} host=db.internal"),
            8 => format!("sslpassword={quoted} host=db.internal sslmode=require"),
            _ => format!("dbname=x password={unquoted}"),
        }
    }

    /// Every text the service derives from a configured database URL: the redacted form, the parsed URL's
    /// `Display` and `Debug` or its parse error, and the settings' and resolved configuration's `Debug` or
    /// the configuration error.
    fn every_text_of(url: &str) -> Vec<(&'static str, String)> {
        let mut texts = vec![("redact_url", redact_url(url))];
        match url.parse::<DatabaseUrl>() {
            Ok(parsed) => {
                texts.push(("Display", parsed.to_string()));
                texts.push(("Debug", format!("{parsed:?}")));
            }
            Err(e) => texts.push(("parse error", e)),
        }
        let raw = crate::config::RawSettings {
            database_url: Some(url.to_owned()),
            ..Default::default()
        };
        texts.push(("RawSettings Debug", format!("{raw:?}")));
        match crate::Config::resolve(raw) {
            Ok(config) => texts.push(("Config Debug", format!("{config:?}"))),
            Err(e) => texts.push(("configuration error", e.to_string())),
        }
        texts
    }

    proptest! {
        // Catches: a password form the redaction misses (a `?password=` or `sslpassword=` parameter, a
        // keyword/value string, quoted or not), or any text derived from the URL that skips the redaction.
        #[test]
        fn a_database_password_in_any_form_never_appears_in_any_text_derived_from_the_url(
            password in "[ -~]{8,24}|\\PC{8,16}",
            form in 0usize..10,
        ) {
            let url = with_password(form, &password);
            let forms = PasswordForms::of(&password);
            for (place, text) in every_text_of(&url) {
                let found = forms.found_in(text.as_bytes());
                prop_assert!(found.is_none(), "{found:?} in {place} of {url:?}: {text}");
            }
        }
    }

    #[test]
    fn urls_parse_and_redact() {
        let pg: DatabaseUrl = "postgres://app:hunter2@db.internal:5432/hooks".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://app:redacted@db.internal:5432/hooks");
        assert!(!format!("{pg:?}").contains("hunter2"));
        assert_eq!(
            "sqlite://webhooks-dispatch.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("webhooks-dispatch.db".into())
        );
        assert_eq!(
            "sqlite:///var/lib/x.db".parse::<DatabaseUrl>().unwrap(),
            DatabaseUrl::Sqlite("/var/lib/x.db".into())
        );
        for bad in ["mysql://u:hunter2@h/db", "sqlite://", "postgres://", "hunter2"] {
            let err = bad.parse::<DatabaseUrl>().unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    // Catches: an unknown parameter (whose value sqlx would log) reaching the driver, or a known one dropped.
    #[test]
    fn only_parameters_the_driver_reads_reach_it() {
        assert_eq!(
            only_known_parameters("postgres://u:p@h/db?sslmode=require&sslpassword=s%20p&options[x]=1"),
            "postgres://u:p@h/db?sslmode=require&options%5Bx%5D=1"
        );
        assert_eq!(only_known_parameters("postgres://h/db?x=1"), "postgres://h/db");
        let kept = "postgres://u@h/db?password=a%26b&application_name=x";
        assert_eq!(only_known_parameters(kept), kept);
    }

    #[tokio::test]
    async fn sqlite_opens_a_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let url: DatabaseUrl = format!("sqlite://{}", dir.path().join("x.db").display())
            .parse()
            .unwrap();
        let db = open(&url, 1).await.expect("sqlite opens");
        assert!(db.listener.is_none());
        assert!(dir.path().join("x.db").exists());
    }
}
