//! [`Executor`] for sqlx's PostgreSQL driver (feature `sqlx`).
//!
//! - `sqlx::PgPool` is an executor: each statement borrows a pooled connection.
//! - [`SqlxConnection`] wraps a `&mut PgConnection` — including a `sqlx::Transaction`, which derefs to one — so
//!   messages can be enqueued inside the caller's own transaction and commit or roll back with it.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool, dispatcher: webhooks_dispatch::Dispatcher<sqlx::PgPool>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use webhooks_dispatch::{store::sqlx::SqlxConnection, NewMessage};
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE invoices SET paid = true WHERE id = $1").bind(42).execute(&mut *tx).await?;
//! dispatcher
//!     .using(&SqlxConnection::new(&mut tx))
//!     .dispatch(NewMessage::new("ep_123", "invoice.paid", serde_json::json!({"invoice": 42})))
//!     .await?;
//! tx.commit().await?; // the webhook exists if and only if the invoice update committed
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnection, PgListener, PgPool, PgRow};
use sqlx::{Arguments, Column, Row as _, TypeInfo};
use tokio::sync::Mutex;

use super::{postgres::NOTIFY_CHANNEL, BoxFuture, Executor, Listener, Row, Value};
use crate::error::StorageError;

fn storage_error(e: sqlx::Error) -> StorageError {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let connection_lost = matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    );
    StorageError::from_driver(code.as_deref(), connection_lost, e)
}

fn arguments(params: &[Value]) -> Result<PgArguments, StorageError> {
    let mut args = PgArguments::default();
    for p in params {
        let added = match p {
            // Every statement casts its parameters explicitly, so an untyped NULL sent as text is cast by the
            // server to whatever the statement says.
            Value::Null => args.add(None::<String>),
            Value::Text(v) => args.add(v.as_str()),
            Value::I32(v) => args.add(*v),
            Value::I64(v) => args.add(*v),
            Value::Bool(v) => args.add(*v),
            Value::Timestamp(v) => args.add(*v),
            Value::TextArray(v) => args.add(v.as_slice()),
            Value::NullableTextArray(v) => args.add(v.as_slice()),
            Value::NullableI32Array(v) => args.add(v.as_slice()),
            Value::I64Array(v) => args.add(v.as_slice()),
            Value::NullableTimestampArray(v) => args.add(v.as_slice()),
        };
        added.map_err(|_| StorageError::decode("parameter could not be encoded"))?;
    }
    Ok(args)
}

fn decode(row: &PgRow) -> Result<Row, StorageError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let err = |_| StorageError::decode("column could not be decoded");
        let v = match col.type_info().name() {
            "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
                row.try_get::<Option<String>, _>(i).map_err(err)?.map(Value::Text)
            }
            "INT2" => row
                .try_get::<Option<i16>, _>(i)
                .map_err(err)?
                .map(|v| Value::I32(v.into())),
            "INT4" => row.try_get::<Option<i32>, _>(i).map_err(err)?.map(Value::I32),
            "INT8" => row.try_get::<Option<i64>, _>(i).map_err(err)?.map(Value::I64),
            "BOOL" => row.try_get::<Option<bool>, _>(i).map_err(err)?.map(Value::Bool),
            "TIMESTAMPTZ" => row
                .try_get::<Option<DateTime<Utc>>, _>(i)
                .map_err(err)?
                .map(Value::Timestamp),
            "TEXT[]" | "VARCHAR[]" => row
                .try_get::<Option<Vec<String>>, _>(i)
                .map_err(err)?
                .map(Value::TextArray),
            "VOID" => None,
            _ => return Err(StorageError::decode("unsupported column type")),
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

async fn run<'e, E>(exec: E, sql: &'static str, params: &[Value]) -> Result<Vec<Row>, StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let rows = sqlx::query_with(sql, arguments(params)?)
        .fetch_all(exec)
        .await
        .map_err(storage_error)?;
    rows.iter().map(decode).collect()
}

// A query without arguments goes over PostgreSQL's simple-query protocol, which accepts several statements.
async fn run_script<'e, E>(exec: E, sql: &'static str) -> Result<(), StorageError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    exec.execute(sql).await.map_err(storage_error)?;
    Ok(())
}

impl Executor for PgPool {
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        Box::pin(run(self, sql, params))
    }

    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(run_script(self, sql))
    }
}

/// A single sqlx connection or transaction as an [`Executor`].
///
/// sqlx needs `&mut` access to run a statement while the core's seam takes `&self`; the mutex bridges the two
/// (it is never contended in practice: the core issues one statement at a time per call).
pub struct SqlxConnection<'c> {
    conn: Mutex<&'c mut PgConnection>,
}

impl<'c> SqlxConnection<'c> {
    /// Borrows a connection; pass `&mut tx` to use a `sqlx::Transaction`.
    pub fn new(conn: &'c mut PgConnection) -> Self {
        SqlxConnection {
            conn: Mutex::new(conn),
        }
    }
}

impl Executor for SqlxConnection<'_> {
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        Box::pin(async move {
            let mut conn = self.conn.lock().await;
            run(&mut **conn, sql, params).await
        })
    }

    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let mut conn = self.conn.lock().await;
            run_script(&mut **conn, sql).await
        })
    }
}

/// A [`Listener`] on its own sqlx connection. sqlx reconnects and re-subscribes by itself after a lost
/// connection; notifications sent while it was down are lost, which the worker's polling covers.
pub struct SqlxListener(PgListener);

impl SqlxListener {
    /// Opens a dedicated connection with the pool's settings and subscribes to the wake-up channel.
    pub async fn connect(pool: &PgPool) -> Result<Self, StorageError> {
        let mut listener = PgListener::connect_with(pool).await.map_err(storage_error)?;
        listener.listen(NOTIFY_CHANNEL).await.map_err(storage_error)?;
        Ok(SqlxListener(listener))
    }
}

impl Listener for SqlxListener {
    fn recv(&mut self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            self.0.recv().await.map_err(storage_error)?;
            Ok(())
        })
    }
}
