//! [`Executor`] for SQLite through rusqlite with a bundled SQLite (feature `sqlite`): the embedded, zero-setup
//! engine for one process.
//!
//! One connection behind a mutex, used from tokio's blocking pool: SQLite serializes writers anyway, and a
//! single connection makes every statement script atomic without busy retries. WAL journaling lets readers
//! of the same file (for example the CLI while the server runs) proceed alongside, and `synchronous = FULL`
//! keeps a committed message on disk across a power loss.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Batch, Connection, OpenFlags};

use super::{BoxFuture, Executor, Row, Statements, Value};
use crate::error::StorageError;

/// A SQLite database file as an executor. Cheap to clone (shares the connection).
#[derive(Clone)]
pub struct SqliteExecutor {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteExecutor").finish_non_exhaustive()
    }
}

fn storage_error(e: rusqlite::Error) -> StorageError {
    use rusqlite::ffi::ErrorCode;
    // SQLite's extended codes mapped onto the SQLSTATE classes the core understands.
    let sqlstate = match &e {
        rusqlite::Error::SqliteFailure(err, _) => match err.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => {
                Some("23505")
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some("23503"),
            _ => match err.code {
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Some("40001"),
                ErrorCode::CannotOpen | ErrorCode::NotADatabase => Some("08006"),
                _ => None,
            },
        },
        _ => None,
    };
    StorageError::from_driver(sqlstate, false, e)
}

impl SqliteExecutor {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(storage_error)?;
        Self::configure(conn)
    }

    /// A private in-memory database, gone when the last clone is dropped.
    pub fn open_in_memory() -> Result<Self, StorageError> {
        Self::configure(Connection::open_in_memory().map_err(storage_error)?)
    }

    fn configure(conn: Connection) -> Result<Self, StorageError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(storage_error)?;
        conn.execute_batch(super::sqlite::CONNECTION_SETUP)
            .map_err(storage_error)?;
        Ok(SqliteExecutor {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::from_driver(None, false, e))?
    }
}

/// Binds a core value the way the SQLite statements expect it: timestamps as Unix microseconds, booleans as
/// 0/1, arrays as JSON text (unnested with `json_each`).
fn to_sql(value: &Value) -> ToSqlOutput<'_> {
    use rusqlite::types::Value as Sql;
    let micros = |t: &chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    let json = |v: serde_json::Value| ToSqlOutput::Owned(Sql::Text(v.to_string()));
    match value {
        Value::Null => ToSqlOutput::Owned(Sql::Null),
        Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::I32(v) => ToSqlOutput::Owned(Sql::Integer(i64::from(*v))),
        Value::I64(v) => ToSqlOutput::Owned(Sql::Integer(*v)),
        Value::Bool(v) => ToSqlOutput::Owned(Sql::Integer(i64::from(*v))),
        Value::Timestamp(t) => ToSqlOutput::Owned(Sql::Integer(micros(t))),
        Value::TextArray(v) => json(serde_json::json!(v)),
        Value::NullableTextArray(v) => json(serde_json::json!(v)),
        Value::NullableI32Array(v) => json(serde_json::json!(v)),
        Value::I64Array(v) => json(serde_json::json!(v)),
        Value::NullableTimestampArray(v) => json(serde_json::json!(v
            .iter()
            .map(|t| t.as_ref().map(micros))
            .collect::<Vec<_>>())),
    }
}

fn from_sql(v: ValueRef<'_>) -> Result<Value, StorageError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::I64(i),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|_| StorageError::decode("text column is not UTF-8"))?
                .to_owned(),
        ),
        ValueRef::Real(_) | ValueRef::Blob(_) => return Err(StorageError::decode("unsupported column type")),
    })
}

/// Runs every statement of `sql` in one transaction, binding each `$n` placeholder to `params[n - 1]`, and
/// returns the rows of all statements that produce rows, in order.
fn run_script(conn: &mut Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, StorageError> {
    let tx = conn.transaction().map_err(storage_error)?;
    let mut out = Vec::new();
    {
        let mut batch = Batch::new(&tx, sql);
        while let Some(mut stmt) = batch.next().map_err(storage_error)? {
            for i in 1..=stmt.parameter_count() {
                let name = stmt.parameter_name(i).unwrap_or_default();
                let n: usize = name
                    .trim_start_matches(['$', '?'])
                    .parse()
                    .map_err(|_| StorageError::decode("unnumbered placeholder"))?;
                let value = params
                    .get(n - 1)
                    .ok_or_else(|| StorageError::decode("missing parameter"))?;
                stmt.raw_bind_parameter(i, to_sql(value)).map_err(storage_error)?;
            }
            let columns = stmt.column_count();
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next().map_err(storage_error)? {
                let mut values = Vec::with_capacity(columns);
                for c in 0..columns {
                    values.push(from_sql(row.get_ref(c).map_err(storage_error)?)?);
                }
                out.push(Row(values));
            }
        }
    }
    tx.commit().map_err(storage_error)?;
    Ok(out)
}

impl Executor for SqliteExecutor {
    fn statements(&self) -> &'static Statements {
        &super::sqlite::STATEMENTS
    }

    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        let params = params.to_vec();
        Box::pin(self.blocking(move |conn| run_script(conn, sql, &params)))
    }

    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.blocking(move |conn| {
            let tx = conn.transaction().map_err(storage_error)?;
            tx.execute_batch(sql).map_err(storage_error)?;
            tx.commit().map_err(storage_error)
        }))
    }
}
