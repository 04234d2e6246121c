//! [`Executor`] for SQLite through rusqlite with a bundled SQLite (feature `sqlite`): the embedded, zero-setup
//! engine for one process.
//!
//! One connection behind a mutex, used from tokio's blocking pool: SQLite serializes writers anyway, and a
//! single connection makes every statement script atomic without busy retries. WAL journaling lets readers
//! of the same file (for example the CLI while the server runs) proceed alongside, and `synchronous = FULL`
//! keeps a committed message on disk across a power loss.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
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
    /// Opens (creating if needed) the database file at `path`. On Unix a new file is created with mode 0600
    /// whatever the umask, and so are its `-wal` and `-shm` files (SQLite gives them the database file's
    /// mode): they hold endpoint secrets and custom header values. An existing file keeps its mode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref();
        create_private(path).map_err(|e| StorageError::from_driver(Some("08006"), false, e))?;
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

/// Creates `path` as an empty file with mode 0600 unless it exists (then SQLite opens what is there). An
/// empty file is a valid new database to SQLite. `:memory:` and the empty path are SQLite's own names for
/// private in-memory and temporary databases, never files.
#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        // The mode given to open(2) is reduced by the umask; a umask of, say, 0277 would leave the owner
        // unable to write. Set it exactly, on the descriptor just created.
        Ok(file) => file.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Binds a core value the way the SQLite statements expect it: timestamps as Unix microseconds, booleans as
/// 0/1, arrays as JSON text (unnested with `json_each`).
fn to_sql(value: &Value) -> ToSqlOutput<'_> {
    use rusqlite::types::Value as Sql;
    match value {
        Value::Null => ToSqlOutput::Owned(Sql::Null),
        Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        Value::I32(v) => ToSqlOutput::Owned(Sql::Integer(i64::from(*v))),
        Value::I64(v) => ToSqlOutput::Owned(Sql::Integer(*v)),
        Value::Bool(v) => ToSqlOutput::Owned(Sql::Integer(i64::from(*v))),
        Value::Timestamp(t) => ToSqlOutput::Owned(Sql::Integer(t.timestamp_micros())),
        Value::TextArray(_)
        | Value::NullableTextArray(_)
        | Value::NullableI32Array(_)
        | Value::I64Array(_)
        | Value::NullableTimestampArray(_) => {
            let elements = json_elements(value).unwrap_or_default();
            ToSqlOutput::Owned(Sql::Text(serde_json::Value::Array(elements).to_string()))
        }
    }
}

/// The elements of an array parameter as JSON values (timestamps as Unix microseconds); `None` for a scalar.
fn json_elements(value: &Value) -> Option<Vec<serde_json::Value>> {
    use serde_json::Value as Json;
    let or_null = |v: Option<Json>| v.unwrap_or(Json::Null);
    Some(match value {
        Value::TextArray(v) => v.iter().map(|s| Json::from(s.as_str())).collect(),
        Value::NullableTextArray(v) => v.iter().map(|s| or_null(s.as_deref().map(Json::from))).collect(),
        Value::NullableI32Array(v) => v.iter().map(|n| or_null(n.map(Json::from))).collect(),
        Value::I64Array(v) => v.iter().map(|&n| Json::from(n)).collect(),
        Value::NullableTimestampArray(v) => v
            .iter()
            .map(|t| or_null(t.map(|t| Json::from(t.timestamp_micros()))))
            .collect(),
        _ => return None,
    })
}

/// What one placeholder of a SQLite statement binds.
#[derive(Debug, PartialEq)]
enum Placeholder {
    /// `$n`: parameter n, counted from 1.
    Param(usize),
    /// `$zip_a_b_…`: the array parameters a, b, … zipped into one JSON array of rows, row i being
    /// `[a[i], b[i], …]`. One `json_each` over it reads every row once; joining one `json_each` per array on
    /// the element index instead is a nested scan that re-parses the arrays, quadratic in the batch.
    Zip(Vec<usize>),
}

impl Placeholder {
    fn parse(name: &str) -> Result<Self, StorageError> {
        let number = |s: &str| {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| StorageError::decode("unnumbered placeholder"))
        };
        let name = name.trim_start_matches(['$', '?']);
        match name.strip_prefix("zip_") {
            Some(list) => Ok(Placeholder::Zip(
                list.split('_').map(number).collect::<Result<_, _>>()?,
            )),
            None => Ok(Placeholder::Param(number(name)?)),
        }
    }
}

fn param(params: &[Value], n: usize) -> Result<&Value, StorageError> {
    params
        .get(n - 1)
        .ok_or_else(|| StorageError::decode("missing parameter"))
}

/// The JSON text a `$zip_…` placeholder binds; its arrays must all have the same length.
fn zip(params: &[Value], columns: &[usize]) -> Result<String, StorageError> {
    let columns = columns
        .iter()
        .map(|&n| {
            json_elements(param(params, n)?)
                .ok_or_else(|| StorageError::decode("zipped parameter is not an array"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let len = columns.first().map_or(0, Vec::len);
    if columns.iter().any(|c| c.len() != len) {
        return Err(StorageError::decode("zipped arrays differ in length"));
    }
    let mut columns: Vec<_> = columns.into_iter().map(Vec::into_iter).collect();
    let rows = (0..len)
        .map(|_| serde_json::Value::Array(columns.iter_mut().filter_map(Iterator::next).collect()))
        .collect();
    Ok(serde_json::Value::Array(rows).to_string())
}

/// Binds every placeholder of `stmt`. `zips` keeps each zip built for this script, which several of its
/// statements may read.
fn bind(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[Value],
    zips: &mut HashMap<String, String>,
) -> Result<(), StorageError> {
    for i in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(i).unwrap_or_default().to_owned();
        match Placeholder::parse(&name)? {
            Placeholder::Param(n) => stmt.raw_bind_parameter(i, to_sql(param(params, n)?)),
            Placeholder::Zip(columns) => {
                let text = match zips.entry(name) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(zip(params, &columns)?),
                };
                stmt.raw_bind_parameter(i, text.as_str())
            }
        }
        .map_err(storage_error)?;
    }
    Ok(())
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

/// Runs every statement of `sql` in one transaction, binding each placeholder (`$n` to `params[n - 1]`, see
/// [`Placeholder`]), and returns the rows of all statements that produce rows, in order.
fn run_script(conn: &mut Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, StorageError> {
    let tx = conn.transaction().map_err(storage_error)?;
    let mut out = Vec::new();
    let mut zips = HashMap::new();
    {
        let mut batch = Batch::new(&tx, sql);
        while let Some(mut stmt) = batch.next().map_err(storage_error)? {
            bind(&mut stmt, params, &mut zips)?;
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

#[cfg(test)]
mod tests {
    //! How the bulk statements scale with their batch. `bulk_statement_timings` is a measurement, not a check:
    //! rerun it after changing one of them, in a release build —
    //! `cargo test -p webhooks-dispatch --lib --release -- --ignored --nocapture bulk_statement_timings`.
    //! `no_statement_joins_unnested_inputs_or_scans_a_table` checks the query plans that keep them linear.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use chrono::{DateTime, Utc};
    use rusqlite::Connection;

    use super::run_script;
    use crate::store::{sqlite, Row, Value};

    const SIZES: [usize; 4] = [1, 100, 500, 1000];
    const ENDPOINTS: usize = 100;
    const ROUNDS: usize = 5;

    /// A fixed instant `seconds` after an arbitrary epoch, so runs are comparable.
    fn at(seconds: usize) -> DateTime<Utc> {
        let seconds = 1_700_000_000 + i64::try_from(seconds).expect("small");
        DateTime::from_timestamp(seconds, 0).expect("in range")
    }

    fn migrated(path: &Path) -> Connection {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(sqlite::CONNECTION_SETUP).expect("setup");
        conn.execute_batch(sqlite::CREATE_MIGRATIONS_TABLE)
            .expect("migrations table");
        for migration in sqlite::MIGRATIONS {
            conn.execute_batch(migration.sql).expect("migrate");
        }
        conn
    }

    fn with_endpoints(path: &Path) -> Connection {
        let mut conn = migrated(path);
        for e in 0..ENDPOINTS {
            // Half subscribe to everything, half to a list, so both subscription checks run.
            let event_types = if e % 2 == 0 { "[]" } else { r#"["a","b"]"# };
            let params = [
                Value::from(format!("ep_{e}")),
                Value::from("owner"),
                Value::from("https://example.com/hook"),
                Value::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                Value::from(event_types),
                Value::from(at(0)),
            ];
            run_script(&mut conn, sqlite::INSERT_ENDPOINT, &params).expect("endpoint");
        }
        conn
    }

    fn timed(conn: &mut Connection, sql: &str, params: &[Value]) -> (Duration, Vec<Row>) {
        let started = Instant::now();
        let rows = run_script(conn, sql, params).expect("statement");
        (started.elapsed(), rows)
    }

    /// `n` messages due at the round's start, spread over the first `endpoints` endpoints, every other one
    /// with an idempotency key.
    fn messages(tag: &str, round: usize, n: usize, endpoints: usize) -> [Value; 6] {
        let text = |f: &dyn Fn(usize) -> Option<String>| Value::from((0..n).map(f).collect::<Vec<_>>());
        [
            text(&|i| Some(format!("msg_{tag}_{round:02}_{i:05}"))),
            text(&|i| Some(format!("ep_{}", i % endpoints))),
            text(&|_| Some("a".to_owned())),
            text(&|i| Some(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(64)))),
            text(&|i| (i % 2 == 0).then(|| format!("key_{tag}_{round}_{i}"))),
            Value::from(at(round * 10)),
        ]
    }

    /// A claim of up to `n` with room for all of them on one endpoint, and `held` entries in the list of
    /// endpoints this process holds: the real endpoints first (holding none, so the join matches), then idle
    /// names.
    fn claim(token: &str, round: usize, n: usize, held: usize) -> [Value; 7] {
        let name = |i: usize| {
            if i < ENDPOINTS {
                format!("ep_{i}")
            } else {
                format!("ep_idle_{i}")
            }
        };
        let n = i64::try_from(n).expect("small");
        [
            Value::from(token),
            Value::from(at(round * 10 + 600)),
            Value::from(at(round * 10)),
            Value::from(n),
            Value::from((0..held).map(name).collect::<Vec<_>>()),
            Value::from(n),
            Value::from((0..held).map(|i| i64::from(i >= ENDPOINTS)).collect::<Vec<_>>()),
        ]
    }

    /// Outcomes for claimed rows in turn: delivered, retrying with a response, unreachable (which backs its
    /// endpoint off), dead. Retries fall after every later round, so each round starts with nothing due.
    fn completions(claimed: &[Row], token: &str, round: usize) -> [Value; 8] {
        let n = claimed.len();
        let ids: Vec<String> = claimed.iter().map(|r| r.text(0).expect("id")).collect();
        let outcome = |i: usize| ["delivered", "retrying", "retrying", "dead"][i % 4].to_owned();
        let status = |i: usize| [Some(200), Some(503), None, Some(410)][i % 4];
        let retry = |i: usize| (i % 4 == 1 || i % 4 == 2).then(|| at(round * 10 + 3600));
        let error = |i: usize| (i % 4 == 2).then(|| "connect: connection refused".to_owned());
        [
            Value::from(ids),
            Value::from(vec![token.to_owned(); n]),
            Value::from((0..n).map(outcome).collect::<Vec<_>>()),
            Value::from(vec![Some(at(round * 10 + 1)); n]),
            Value::from((0..n).map(status).collect::<Vec<_>>()),
            Value::from(vec![25_i64; n]),
            Value::from((0..n).map(retry).collect::<Vec<_>>()),
            Value::from((0..n).map(error).collect::<Vec<_>>()),
        ]
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    const COLUMNS: [&str; 5] = [
        "INSERT_MESSAGES",
        "CLAIM_DUE",
        "CLAIM_DUE 1 endpoint",
        "COMPLETE_ATTEMPTS",
        "RELEASE_CLAIMS",
    ];

    /// Median time of each bulk statement (in [`COLUMNS`] order) for one batch size, over fresh rounds on one
    /// growing database: a batch over 100 endpoints inserted, claimed, released, claimed again and completed;
    /// then a batch for one endpoint, all due at once, claimed (its slowest case) and completed.
    fn measure(n: usize) -> [Duration; 5] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = with_endpoints(&dir.path().join("timings.db"));
        let mut times: [Vec<Duration>; 5] = Default::default();
        let mut run = |column: usize, sql: &str, params: &[Value]| {
            let (t, rows) = timed(&mut conn, sql, params);
            times[column].push(t);
            assert_eq!(rows.len(), n, "{}", COLUMNS[column]);
            rows
        };
        for round in 0..ROUNDS {
            run(
                0,
                sqlite::INSERT_MESSAGES,
                &messages("spread", round, n, ENDPOINTS),
            );
            let first = format!("lease_a_{round}");
            let claimed = run(1, sqlite::CLAIM_DUE, &claim(&first, round, n, n));
            let ids: Vec<String> = claimed.iter().map(|r| r.text(0).expect("id")).collect();
            run(
                4,
                sqlite::RELEASE_CLAIMS,
                &[Value::from(ids), Value::from(vec![first; n])],
            );
            let second = format!("lease_b_{round}");
            let claimed = run(1, sqlite::CLAIM_DUE, &claim(&second, round, n, n));
            run(
                3,
                sqlite::COMPLETE_ATTEMPTS,
                &completions(&claimed, &second, round),
            );

            run(0, sqlite::INSERT_MESSAGES, &messages("one", round, n, 1));
            let token = format!("lease_c_{round}");
            let claimed = run(2, sqlite::CLAIM_DUE, &claim(&token, round, n, 0));
            run(
                3,
                sqlite::COMPLETE_ATTEMPTS,
                &completions(&claimed, &token, round),
            );
        }
        times.map(median)
    }

    #[test]
    #[ignore = "a measurement: prints timings, asserts only that the statements did their work"]
    fn bulk_statement_timings() {
        println!("medians over {ROUNDS} rounds, temp-file database, synchronous = FULL");
        print!("{:>6}", "rows");
        for column in COLUMNS {
            print!(" {column:>22}");
        }
        println!();
        for n in SIZES {
            print!("{n:>6}");
            for t in measure(n) {
                let per_row = t.as_secs_f64() * 1e6 / n as f64;
                print!(" {:>8.2} ms {:>5.1} µs/row", t.as_secs_f64() * 1e3, per_row);
            }
            println!();
        }
    }

    /// The names EXPLAIN QUERY PLAN gives the tables of `sql`: theirs and their aliases.
    fn table_names(sql: &str) -> Vec<&str> {
        let words: Vec<&str> = sql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let mut names = Vec::new();
        for (i, w) in words.iter().enumerate() {
            if w.starts_with("webhooks_dispatch_") {
                names.push(*w);
                if words.get(i + 1).is_some_and(|a| a.eq_ignore_ascii_case("AS")) {
                    names.extend(words.get(i + 2));
                }
            }
        }
        names
    }

    /// Linear statements, as their plans show: no (sub)query joins two `json_each` unnestings (a nested scan,
    /// quadratic in the batch; one `json_each` over a zip reads every row once), and no table is scanned in
    /// full (every row is found through an index) — except the handful of migration records.
    #[test]
    fn no_statement_joins_unnested_inputs_or_scans_a_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = migrated(&dir.path().join("plans.db"));
        let setup = [sqlite::CREATE_MIGRATIONS_TABLE, sqlite::CONNECTION_SETUP];
        let mut checked = 0;
        for sql in sqlite::STATEMENTS.all() {
            if setup.contains(&sql) || sqlite::MIGRATIONS.iter().any(|m| m.sql == sql) {
                continue;
            }
            let tables = table_names(sql);
            // Split as the audit splits them: comments removed, then at each `;` (no literal holds one).
            let code: Vec<&str> = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect();
            for statement in code.join("\n").split(';').filter(|s| !s.trim().is_empty()) {
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
                    .expect("plan");
                // Planned with its placeholders unbound (NULL), which changes no plan.
                let mut rows = stmt.raw_query();
                let mut plan: Vec<(i64, String)> = Vec::new();
                while let Some(r) = rows.next().expect("plan row") {
                    plan.push((r.get(1).expect("parent"), r.get(3).expect("detail")));
                }
                let shown = || {
                    plan.iter()
                        .map(|(p, d)| format!("\n  {p:>4} {d}"))
                        .collect::<String>()
                };
                // `json_each` is the only virtual table these statements use, and is named by its alias.
                let unnests = |d: &str| d.contains(" VIRTUAL TABLE ");
                for (parent, detail) in &plan {
                    let scanned = (!unnests(detail))
                        .then(|| detail.strip_prefix("SCAN ").and_then(|d| d.split(' ').next()))
                        .flatten();
                    if let Some(name) = scanned.filter(|n| tables.contains(n)) {
                        assert_eq!(
                            name,
                            "webhooks_dispatch_migrations",
                            "full scan of {name} in:\n{statement}{}",
                            shown()
                        );
                    }
                    let unnestings = plan.iter().filter(|(p, d)| p == parent && unnests(d)).count();
                    assert!(
                        unnestings <= 1,
                        "json_each joined to json_each in:\n{statement}{}",
                        shown()
                    );
                }
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} statements checked");
    }

    #[test]
    fn zip_binds_one_json_row_per_element_and_refuses_ragged_or_scalar_input() {
        use super::{zip, Placeholder};
        assert_eq!(Placeholder::parse("$3").unwrap(), Placeholder::Param(3));
        assert_eq!(
            Placeholder::parse("$zip_5_7").unwrap(),
            Placeholder::Zip(vec![5, 7])
        );
        for bad in ["$0", "$zip_", "$zip_1_x", "$name"] {
            assert!(Placeholder::parse(bad).is_err(), "{bad}");
        }
        let params = [
            Value::from(vec!["a\"\\".to_owned(), "b".to_owned()]),
            Value::from(vec![Some(200), None]),
            Value::from(vec![Some(at(0)), None]),
            Value::from(vec![1_i64]),
            Value::from("scalar"),
        ];
        let micros = at(0).timestamp_micros();
        assert_eq!(
            zip(&params, &[1, 2, 3]).unwrap(),
            format!(r#"[["a\"\\",200,{micros}],["b",null,null]]"#)
        );
        assert!(zip(&params, &[1, 4]).is_err(), "arrays of different lengths");
        assert!(zip(&params, &[1, 5]).is_err(), "a scalar");
        assert!(zip(&params, &[1, 6]).is_err(), "a missing parameter");
    }

    // Catches: a new database file, or its -wal and -shm, readable by other users of the machine (SQLite
    // creates files 0644 under the usual umask): they hold endpoint secrets and custom header values.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_database_and_its_wal_and_shm_files_are_private_to_the_owner() {
        use crate::store::Executor as _;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new.db");
        let exec = super::SqliteExecutor::open(&path).expect("open");
        // The first write creates the -wal and -shm files; they last while the connection is open.
        exec.batch_execute(sqlite::CREATE_MIGRATIONS_TABLE)
            .await
            .expect("write");
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            let mode = std::fs::metadata(&file).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
        }
    }
}
