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

/// Where the data lives. `Debug` and `Display` redact the password.
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
            "" => Err("expected postgres://… or sqlite://PATH".to_owned()),
            other => Err(format!(
                "unsupported scheme {other:?} (expected postgres://… or sqlite://PATH)"
            )),
        }
    }
}

/// The URL with any password replaced by `redacted`, safe to log.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("redacted"));
            }
            url.to_string()
        }
        // Unparseable: it might still contain a password somewhere, so show only the scheme.
        Err(_) => format!("{}:[unparseable]", raw.split(':').next().unwrap_or_default()),
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
            let failed = |reason: String| Error::Connect {
                url: url.to_string(),
                reason,
            };
            let options: PgConnectOptions = raw.parse().map_err(|e: sqlx::Error| failed(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
