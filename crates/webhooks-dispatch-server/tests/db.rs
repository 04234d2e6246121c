//! Direct access to a test's database, bypassing the service: what it stored is checked where it is stored.
//!
//! The statements are plain SQL that both engines accept, run through the library's own `Executor`, so a
//! test reads PostgreSQL and SQLite alike.

use std::sync::Arc;

use webhooks_dispatch::store::{Executor, Row, Value};
use webhooks_dispatch_server::database::{self, DatabaseUrl};

use crate::support::Engine;

/// Opens the database at `url` (a second pool or connection beside the service's).
pub async fn open(url: &str) -> Arc<dyn Executor> {
    let url: DatabaseUrl = url.parse().expect("a database URL");
    database::open(&url, 2)
        .await
        .expect("open the test database")
        .executor
}

async fn rows(db: &dyn Executor, sql: &'static str, params: &[Value]) -> Vec<Row> {
    db.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} ({:?})", std::error::Error::source(&e)))
}

/// One message's row in `webhooks_dispatch_outbox`.
#[derive(Debug)]
pub struct OutboxRow {
    pub id: String,
    pub status: String,
    pub attempts: i64,
    pub lease_token: Option<String>,
}

/// Every row of the outbox, by id.
pub async fn outbox(db: &dyn Executor) -> Vec<OutboxRow> {
    let sql = "SELECT id, status, attempts, lease_token FROM webhooks_dispatch_outbox ORDER BY id";
    rows(db, sql, &[])
        .await
        .iter()
        .map(|r| OutboxRow {
            id: r.text(0).unwrap(),
            status: r.text(1).unwrap(),
            attempts: r.int(2).unwrap(),
            lease_token: r.opt_text(3).unwrap(),
        })
        .collect()
}

/// Every message of one endpoint, as (id, status), by id.
pub async fn messages_of(db: &dyn Executor, endpoint_id: &str) -> Vec<(String, String)> {
    let sql = "SELECT id, endpoint_id, status FROM webhooks_dispatch_outbox ORDER BY id";
    rows(db, sql, &[])
        .await
        .iter()
        .filter(|r| r.text(1).unwrap() == endpoint_id)
        .map(|r| (r.text(0).unwrap(), r.text(2).unwrap()))
        .collect()
}

/// Every event of one owner, as (event type, payload text).
pub async fn events_of(db: &dyn Executor, owner_id: &str) -> Vec<(String, String)> {
    // Filtered here rather than bound: one statement text both engines accept without a cast.
    let sql = "SELECT owner_id, event_type, payload FROM webhooks_dispatch_events ORDER BY id";
    rows(db, sql, &[])
        .await
        .iter()
        .filter(|r| r.text(0).unwrap() == owner_id)
        .map(|r| (r.text(1).unwrap(), r.text(2).unwrap()))
        .collect()
}

/// One row of `webhooks_dispatch_attempts`.
#[derive(Debug)]
pub struct AttemptRow {
    pub message_id: String,
    pub attempt_no: i64,
    pub outcome: String,
    pub status_code: Option<i64>,
}

/// Every stored endpoint key as (key id, endpoint id, stored secret text), by key id.
pub async fn stored_keys(db: &dyn Executor) -> Vec<(String, String, String)> {
    let sql = "SELECT id, endpoint_id, secret FROM webhooks_dispatch_endpoint_keys ORDER BY id";
    rows(db, sql, &[])
        .await
        .iter()
        .map(|r| (r.text(0).unwrap(), r.text(1).unwrap(), r.text(2).unwrap()))
        .collect()
}

/// Every recorded attempt, by message and number.
pub async fn attempts(db: &dyn Executor) -> Vec<AttemptRow> {
    let sql = "SELECT message_id, attempt_no, outcome, status_code FROM webhooks_dispatch_attempts \
               ORDER BY message_id, attempt_no";
    rows(db, sql, &[])
        .await
        .iter()
        .map(|r| AttemptRow {
            message_id: r.text(0).unwrap(),
            attempt_no: r.int(1).unwrap(),
            outcome: r.text(2).unwrap(),
            status_code: r.opt_int(3).unwrap(),
        })
        .collect()
}

/// The four tables holding endpoints, their keys, messages and attempts, every row, each cell rendered as
/// text and labelled `table.column`. Built from the catalogue, so a column added later is covered without
/// touching this.
pub async fn dump(engine: Engine, db: &dyn Executor) -> Vec<(String, String)> {
    let tables: [(&str, &'static str); 4] = [
        (
            "webhooks_dispatch_endpoints",
            "SELECT * FROM webhooks_dispatch_endpoints",
        ),
        (
            "webhooks_dispatch_endpoint_keys",
            "SELECT * FROM webhooks_dispatch_endpoint_keys",
        ),
        (
            "webhooks_dispatch_outbox",
            "SELECT * FROM webhooks_dispatch_outbox",
        ),
        (
            "webhooks_dispatch_attempts",
            "SELECT * FROM webhooks_dispatch_attempts",
        ),
    ];
    let columns_sql = match engine {
        Engine::Postgres => {
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1::text ORDER BY ordinal_position"
        }
        Engine::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
    };
    let mut cells = Vec::new();
    for (table, select) in tables {
        let names: Vec<String> = rows(db, columns_sql, &[Value::from(table)])
            .await
            .iter()
            .map(|r| r.text(0).unwrap())
            .collect();
        assert!(names.len() >= 5, "{table} has columns {names:?}");
        for row in rows(db, select, &[]).await {
            assert_eq!(row.0.len(), names.len(), "{table}: a column per name");
            for (name, value) in names.iter().zip(row.0) {
                cells.push((format!("{table}.{name}"), render(value)));
            }
        }
    }
    cells
}

fn render(value: Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Text(s) => s,
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::Bool(v) => v.to_string(),
        Value::Timestamp(t) => t.to_rfc3339(),
        Value::TextArray(v) => v.join(","),
        other => format!("{other:?}"),
    }
}
