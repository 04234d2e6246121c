//! Choosing and opening the storage engine — the only place that knows which engines exist.
//!
//! [`open`] turns a [`DatabaseUrl`] into a [`Database`]: an [`Executor`] for the library, an optional factory
//! of LISTEN connections for the worker (engines without one make the worker poll), and the engine's
//! queue-statistics statement for `/metrics`. Everything else in the service is engine-agnostic.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::Connection;
use webhooks_dispatch::store::sqlx::SqlxListener;
use webhooks_dispatch::store::{BoxFuture, Executor, Listener, Value};
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
    /// This engine's [`QueueStats`] statement. Belongs in the library; see [`queue_stats`].
    queue_stats_sql: &'static str,
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
                queue_stats_sql: POSTGRES_QUEUE_STATS,
            })
        }
        // TODO(sqlite): the one place to add the embedded engine once the library has it, roughly
        //     let exec = webhooks_dispatch::store::sqlite::open(path)?;
        //     Ok(Database { executor: Arc::new(exec), listener: None, queue_stats_sql: SQLITE_QUEUE_STATS })
        // (no LISTEN on SQLite: the worker polls; the statement below needs a SQLite dialect version).
        DatabaseUrl::Sqlite(path) => Err(Error::UnsupportedDatabase(format!(
            "SQLite ({}) is not yet supported by this build; pass --database-url postgres://… \
             or set WEBHOOKS_DISPATCH_DATABASE_URL",
            path.display()
        ))),
    }
}

/// The due backlog, for the `/metrics` gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// Pending messages whose next attempt is due and that no worker holds a lease on.
    pub due: i64,
    /// When the oldest of them became due; `None` when there are none.
    pub oldest_due_at: Option<DateTime<Utc>>,
}

/// `$1` now → count of due, unleased pending messages (int8), the earliest `next_attempt_at` among them
/// (timestamptz, NULL when none). The predicate is exactly `CLAIM_DUE`'s, so the count is what a worker
/// with unlimited capacity would claim right now; the partial index on pending rows serves it.
///
/// NOT in the library yet: it reads `webhooks_dispatch_outbox`, whose layout is the library's business, so
/// it should move there as `Dispatcher::queue_stats()` (one statement per engine).
pub const POSTGRES_QUEUE_STATS: &str = "\
SELECT count(*)::int8, min(next_attempt_at)
FROM webhooks_dispatch_outbox
WHERE status = 'pending' AND next_attempt_at <= $1::timestamptz
  AND (lease_expires_at IS NULL OR lease_expires_at <= $1::timestamptz)";

/// Reads the due backlog with one statement.
pub async fn queue_stats(db: &Database, now: DateTime<Utc>) -> Result<QueueStats, StorageError> {
    let rows = db.executor.query(db.queue_stats_sql, &[Value::from(now)]).await?;
    let row = rows
        .first()
        .ok_or_else(|| StorageError::decode("no row from queue stats"))?;
    Ok(QueueStats {
        due: row.int(0)?,
        oldest_due_at: row.opt_timestamp(1)?,
    })
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
    async fn sqlite_is_refused_clearly_for_now() {
        let url: DatabaseUrl = crate::config::DEFAULT_DATABASE_URL.parse().unwrap();
        let err = open(&url, 1).await.err().expect("not supported yet").to_string();
        assert!(err.contains("not yet supported"), "{err}");
    }
}
