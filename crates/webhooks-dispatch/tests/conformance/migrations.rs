use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use webhooks_dispatch::ssrf::StaticResolver;
use webhooks_dispatch::store::rusqlite::SqliteExecutor;
use webhooks_dispatch::store::{BoxFuture, Executor, Row, Statements, Value};
use webhooks_dispatch::{DispatchError, Dispatcher, EndpointSecret, StorageError};
use webhooks_dispatch_testkit::receiver::{Receiver, ReceiverOptions, TestCa};

use crate::conformance;
use crate::support::{deadpool_pool, CountingExecutor, Ctx, Engine, Exec, RECEIVER_HOST};

conformance!(
    fresh_and_upgraded_databases_end_with_the_same_schema,
    migrate_twice_and_from_several_processes_at_once_applies_each_migration_once,
    a_database_migrated_by_a_newer_release_is_refused_and_left_unchanged,
    a_failed_migration_leaves_no_record_and_is_applied_by_the_next_run,
    a_migration_whose_commit_reply_was_lost_counts_as_applied,
);

/// Upgrades from each numbered release to this one.
mod upgrades;

/// The schema exactly as `migrate()` created it before numbered migrations (the release databases in the
/// field were made by), copied verbatim from that release's `MIGRATE` constants.
fn schema_v0(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => include_str!("fixtures/schema_v0_sqlite.sql"),
        _ => include_str!("fixtures/schema_v0_postgres.sql"),
    }
}

/// The statements these tests write and read rows with, in one engine's dialect. A nullable timestamp or
/// integer goes in as a one-element array, so each parameter keeps one type whether or not it is NULL (sqlx
/// prepares a statement once, with the types of its first call).
struct Sql {
    endpoint: &'static str,
    message: &'static str,
    attempt: &'static str,
    record: &'static str,
    index: &'static str,
    tables: &'static str,
    schema: [&'static str; 3],
}

const POSTGRES: Sql = Sql {
    endpoint: "INSERT INTO webhooks_dispatch_endpoints (id, owner_id, url, secret, event_types, created_at) \
               VALUES ($1::text, $2::text, $3::text, $4::text, $5::text[], $6::timestamptz)",
    message: "INSERT INTO webhooks_dispatch_outbox (id, endpoint_id, event_type, payload, idempotency_key, \
              status, attempts, next_attempt_at, lease_token, lease_expires_at, created_at, updated_at) \
              VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::int4, \
              $8::timestamptz, $9::text, ($10::timestamptz[])[1], $11::timestamptz, $12::timestamptz)",
    attempt: "INSERT INTO webhooks_dispatch_attempts (message_id, attempt_no, attempted_at, status_code, \
              outcome, latency_ms, next_attempt_at, error) VALUES ($1::text, $2::int4, $3::timestamptz, \
              ($4::int4[])[1], $5::text, $6::int8, ($7::timestamptz[])[1], $8::text)",
    record: "INSERT INTO webhooks_dispatch_migrations (version, name) VALUES ($1::int4, $2::text)",
    index: "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1::text",
    tables: "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() ORDER BY 1",
    schema: [
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
         COALESCE(column_default, '')::text FROM information_schema.columns \
         WHERE table_schema = current_schema() ORDER BY 1, 2",
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
        "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2",
    ],
};

const SQLITE: Sql = Sql {
    endpoint: "INSERT INTO webhooks_dispatch_endpoints (id, owner_id, url, secret, event_types, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6)",
    message: "INSERT INTO webhooks_dispatch_outbox (id, endpoint_id, event_type, payload, idempotency_key, \
              status, attempts, next_attempt_at, lease_token, lease_expires_at, created_at, updated_at) \
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, json_extract($10, '$[0]'), $11, $12)",
    attempt: "INSERT INTO webhooks_dispatch_attempts (message_id, attempt_no, attempted_at, status_code, \
              outcome, latency_ms, next_attempt_at, error) \
              VALUES ($1, $2, $3, json_extract($4, '$[0]'), $5, $6, json_extract($7, '$[0]'), $8)",
    record: "INSERT INTO webhooks_dispatch_migrations (version, name) VALUES ($1, $2)",
    index: "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = $1",
    tables: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1",
    schema: [
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
        "SELECT m.name, p.* FROM sqlite_master AS m, pragma_index_list(m.name) AS p \
         WHERE m.type = 'table' ORDER BY 1, 3",
        "SELECT m.name, p.* FROM sqlite_master AS m, pragma_foreign_key_list(m.name) AS p \
         WHERE m.type = 'table' ORDER BY 1, 2, 3",
    ],
};

fn sql(engine: Engine) -> &'static Sql {
    match engine {
        Engine::Sqlite => &SQLITE,
        _ => &POSTGRES,
    }
}

const MIGRATIONS: &str =
    "SELECT version, name, applied_at FROM webhooks_dispatch_migrations ORDER BY version";
const NEW_INDEX: &str = "webhooks_dispatch_outbox_endpoint_due_idx";
/// Every column the old schemas had (later migrations add columns, whose values are checked separately).
const DUMP: [&str; 3] = [
    "SELECT id, owner_id, url, secret, event_types, created_at FROM webhooks_dispatch_endpoints ORDER BY id",
    "SELECT id, endpoint_id, event_type, payload, idempotency_key, status, attempts, next_attempt_at, \
     lease_token, lease_expires_at, created_at, updated_at FROM webhooks_dispatch_outbox ORDER BY id",
    "SELECT * FROM webhooks_dispatch_attempts ORDER BY message_id, attempt_no",
];
/// [`DUMP`] in other words, for a table whose columns a test renamed: sqlx caches prepared statements by their
/// text, and PostgreSQL refuses to run a cached `SELECT *` whose result columns changed.
const DUMP_RENAMED: [&str; 3] = [
    "SELECT * FROM webhooks_dispatch_endpoints ORDER BY 1",
    "SELECT * FROM webhooks_dispatch_outbox ORDER BY 1",
    "SELECT * FROM webhooks_dispatch_attempts ORDER BY 1, 2",
];
/// The tables of the release before numbered migrations: no migrations table.
const OLD_TABLES: [&str; 3] = [
    "webhooks_dispatch_attempts",
    "webhooks_dispatch_endpoints",
    "webhooks_dispatch_outbox",
];
/// The tables of this release.
const TABLES: [&str; 7] = [
    "webhooks_dispatch_attempts",
    "webhooks_dispatch_endpoint_keys",
    "webhooks_dispatch_endpoints",
    "webhooks_dispatch_event_skips",
    "webhooks_dispatch_events",
    "webhooks_dispatch_migrations",
    "webhooks_dispatch_outbox",
];

/// Everything a test needs, on a brand-new database that nothing has migrated.
async fn unmigrated(engine: Engine) -> Ctx {
    let (exec, db_url) = engine.connect().await;
    let ca = TestCa::new();
    let receiver = Receiver::start(&ca, ReceiverOptions::default())
        .await
        .expect("receiver");
    let resolver = StaticResolver::new();
    resolver.insert(RECEIVER_HOST, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let (ring, master_key) = crate::support::test_ring();
    Ctx {
        exec,
        db_url,
        ca,
        receiver,
        resolver,
        ring,
        master_key,
    }
}

/// A second client of the same database with its own connections, as another process would have.
async fn another_process(engine: Engine, url: &str) -> Exec {
    match engine {
        Engine::Sqlx => Arc::new(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .connect(url)
                .await
                .expect("sqlx connect"),
        ),
        Engine::TokioPostgres => Arc::new(deadpool_pool(url)),
        Engine::Sqlite => {
            let path = url.strip_prefix("sqlite://").expect("a sqlite:// url");
            Arc::new(SqliteExecutor::open(path).expect("open sqlite"))
        }
    }
}

async fn rows(exec: &dyn Executor, sql: &'static str, params: &[Value]) -> Vec<Row> {
    let result = exec.query(sql, params).await;
    result.unwrap_or_else(|e| panic!("{e:?} ({:?}): {sql}", std::error::Error::source(&e)))
}

/// Every row of the three data tables, every column; an endpoint's secret is read where the schema keeps it
/// (its own column up to 0005, its current key since 0006), so an upgrade that moved it compares equal.
async fn dump(exec: &dyn Executor) -> Vec<Vec<Row>> {
    let endpoints = match exec.query(KEYED_ENDPOINTS, &[]).await {
        Ok(endpoints) => endpoints,
        Err(_) => rows(exec, DUMP[0], &[]).await,
    };
    let mut tables = vec![endpoints];
    for select in &DUMP[1..] {
        tables.push(rows(exec, select, &[]).await);
    }
    tables
}

/// [`DUMP`]'s endpoints since 0006. Before it, the table of keys does not exist and this fails.
const KEYED_ENDPOINTS: &str = "\
SELECT e.id, e.owner_id, e.url, k.secret, e.event_types, e.created_at FROM webhooks_dispatch_endpoints AS e
LEFT JOIN webhooks_dispatch_endpoint_keys AS k ON k.endpoint_id = e.id AND k.expires_at IS NULL ORDER BY e.id";

async fn dump_with(exec: &dyn Executor, selects: [&'static str; 3]) -> Vec<Vec<Row>> {
    let mut tables = Vec::new();
    for select in selects {
        tables.push(rows(exec, select, &[]).await);
    }
    tables
}

/// (version, name, applied_at) of every recorded migration.
async fn recorded(exec: &dyn Executor) -> Vec<(i64, String, DateTime<Utc>)> {
    let rows = rows(exec, MIGRATIONS, &[]).await;
    let record = |r: &Row| (r.int(0).unwrap(), r.text(1).unwrap(), r.timestamp(2).unwrap());
    rows.iter().map(record).collect()
}

async fn versions(exec: &dyn Executor) -> Vec<i64> {
    recorded(exec).await.into_iter().map(|(v, _, _)| v).collect()
}

/// Every version this release knows.
fn known(statements: &Statements) -> Vec<i64> {
    statements
        .migrations
        .iter()
        .map(|m| i64::from(m.version))
        .collect()
}

async fn table_names(engine: Engine, exec: &dyn Executor) -> Vec<String> {
    let rows = rows(exec, sql(engine).tables, &[]).await;
    rows.iter().map(|r| r.text(0).unwrap()).collect()
}

/// The definition of the per-endpoint queue index (migration 0002), if it exists.
async fn new_index(engine: Engine, exec: &dyn Executor) -> Option<String> {
    let rows = rows(exec, sql(engine).index, &[NEW_INDEX.into()]).await;
    rows.first().map(|r| r.text(0).unwrap())
}

/// When the old release wrote a row: in the past, with microseconds, so a shifted or truncated timestamp
/// would show.
fn at(day: u32, micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, day, 12, 0, 0).unwrap() + chrono::Duration::microseconds(micros)
}

/// A message the old release left pending and due, to be delivered after the upgrade.
struct Due {
    id: &'static str,
    endpoint: usize,
    payload: &'static str,
    attempts_before: u32,
}

const DUE: [Due; 3] = [
    Due {
        id: "msg_old_pending_new",
        endpoint: 0,
        payload: r#"{"n":1,"text":"héllo \"world\""}"#,
        attempts_before: 0,
    },
    Due {
        id: "msg_old_pending_retry",
        endpoint: 1,
        payload: r#"{"z":2,"a":[true,null]}"#,
        attempts_before: 1,
    },
    Due {
        id: "msg_old_pending_lease_expired",
        endpoint: 0,
        payload: r#"{"n":3}"#,
        attempts_before: 0,
    },
];

/// Messages the upgrade and the deliveries after it must leave exactly as they were.
const SETTLED: [&str; 3] = ["msg_old_delivered", "msg_old_dead", "msg_old_pending_later"];

/// Fills an old-schema database with plain SQL: two endpoints, and messages in every state the old release
/// could leave (due, retrying, held by a crashed drain's expired lease, scheduled later, delivered, dead) with
/// their attempts. Returns the endpoints' ids and secrets.
async fn seed_old_rows(ctx: &Ctx, engine: Engine) -> Vec<(&'static str, EndpointSecret)> {
    let sql = sql(engine);
    let exec = ctx.exec.as_ref();
    let endpoints = vec![
        ("ep_old_a", EndpointSecret::generate()),
        ("ep_old_b", EndpointSecret::generate()),
    ];
    let subscriptions = [
        vec![],
        vec!["invoice.paid".to_owned(), "order.created".to_owned()],
    ];
    for (i, (id, secret)) in endpoints.iter().enumerate() {
        let params = [
            Value::from(*id),
            Value::from(format!("owner_{i}")),
            Value::from(ctx.url()),
            Value::from(secret.expose()),
            Value::from(subscriptions[i].clone()),
            Value::from(at(1, 111 * i as i64)),
        ];
        rows(exec, sql.endpoint, &params).await;
    }
    let later = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap();
    let lease = Some(("lease_of_a_crashed_drain", at(2, 900)));
    #[rustfmt::skip]
    let messages = [
        (DUE[0].id, 0, "invoice.paid", DUE[0].payload, Some("key-1"), "pending", 0, at(2, 1), None, at(2, 1)),
        (DUE[1].id, 1, "order.created", DUE[1].payload, None, "pending", 1, at(3, 5), None, at(2, 500)),
        (DUE[2].id, 0, "invoice.paid", DUE[2].payload, Some("key-3"), "pending", 0, at(2, 3), lease, at(2, 3)),
        (SETTLED[0], 0, "invoice.paid", r#"{"n":4}"#, None, "delivered", 2, at(2, 44), None, at(2, 45)),
        (SETTLED[1], 1, "invoice.paid", r#"{"n":5}"#, Some("key-5"), "dead", 1, at(2, 5), None, at(2, 55)),
        (SETTLED[2], 0, "invoice.paid", r#"{"n":6}"#, None, "pending", 0, later, None, at(2, 6)),
    ];
    for (id, ep, event, payload, key, status, attempts, next, lease, updated) in messages {
        let params = [
            Value::from(id),
            Value::from(endpoints[ep].0),
            Value::from(event),
            Value::from(payload),
            Value::from(key),
            Value::from(status),
            Value::I32(attempts),
            Value::from(next),
            Value::from(lease.map(|(token, _)| token)),
            Value::from(vec![lease.map(|(_, until)| until)]),
            Value::from(at(2, 0)),
            Value::from(updated),
        ];
        rows(exec, sql.message, &params).await;
    }
    #[rustfmt::skip]
    let attempts = [
        (DUE[1].id, 1, at(2, 500), None, "retrying", 30_000, Some(at(3, 5)), Some("timed out")),
        (SETTLED[0], 1, at(2, 40), Some(500), "retrying", 12, Some(at(2, 44)), None),
        (SETTLED[0], 2, at(2, 45), Some(200), "delivered", 8, None, None),
        (SETTLED[1], 1, at(2, 55), Some(410), "dead", 9, None, None),
    ];
    for (message, no, attempted, status, outcome, latency, next, error) in attempts {
        let params = [
            Value::from(message),
            Value::I32(no),
            Value::from(attempted),
            Value::from(vec![status]),
            Value::from(outcome),
            Value::I64(latency),
            Value::from(vec![next]),
            Value::from(error),
        ];
        rows(exec, sql.attempt, &params).await;
    }
    endpoints
}

/// An old-release database with rows in it, and what it held.
async fn old_database_with_rows(engine: Engine) -> (Ctx, Vec<(&'static str, EndpointSecret)>, Vec<Vec<Row>>) {
    let ctx = unmigrated(engine).await;
    ctx.exec
        .batch_execute(schema_v0(engine))
        .await
        .expect("old schema");
    let endpoints = seed_old_rows(&ctx, engine).await;
    let before = dump(ctx.exec.as_ref()).await;
    let counts: Vec<usize> = before.iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 6, 4], "seeded rows");
    assert_eq!(table_names(engine, ctx.exec.as_ref()).await, OLD_TABLES);
    (ctx, endpoints, before)
}

/// Columns, indexes and constraints, as the engine's catalog describes them.
async fn schema(engine: Engine, exec: &dyn Executor) -> Vec<Vec<Row>> {
    let mut out = Vec::new();
    for select in sql(engine).schema {
        out.push(rows(exec, select, &[]).await);
    }
    out
}

// Catches a 0001 that is not the schema of the release before it (an upgraded database would then differ
// from a new one), and a later migration that only works on one of the two paths.
async fn fresh_and_upgraded_databases_end_with_the_same_schema(engine: Engine) {
    let (fresh, _) = engine.connect().await;
    Dispatcher::new(fresh.clone())
        .migrate()
        .await
        .expect("migrate a new database");
    let (upgraded, _) = engine.connect().await;
    upgraded
        .batch_execute(schema_v0(engine))
        .await
        .expect("old schema");
    Dispatcher::new(upgraded.clone())
        .migrate()
        .await
        .expect("upgrade");
    let fresh_schema = schema(engine, fresh.as_ref()).await;
    assert!(
        fresh_schema.iter().all(|rows| !rows.is_empty()),
        "{fresh_schema:?}"
    );
    assert_eq!(schema(engine, upgraded.as_ref()).await, fresh_schema);
}

/// How many clients migrate one database at once in the race below.
const PROCESSES: usize = 4;

async fn migrate_twice_and_from_several_processes_at_once_applies_each_migration_once(engine: Engine) {
    // A few rounds, each on a new database, so a race the lock should prevent has several chances to show.
    for _ in 0..3 {
        let (exec, url) = engine.connect().await;
        let start = Arc::new(tokio::sync::Barrier::new(PROCESSES + 1));
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..PROCESSES {
            let (process, start) = (another_process(engine, &url).await, start.clone());
            racers.spawn(async move {
                start.wait().await;
                Dispatcher::new(process).migrate().await
            });
        }
        // An older release starting at the same moment (a rolling deploy) runs its unnumbered migration.
        let (old, start) = (another_process(engine, &url).await, start.clone());
        racers.spawn(async move {
            start.wait().await;
            old.batch_execute(schema_v0(engine))
                .await
                .map_err(DispatchError::from)
        });
        while let Some(joined) = racers.join_next().await {
            joined.expect("task").expect("a concurrent migrate failed");
        }
        assert_eq!(table_names(engine, exec.as_ref()).await, TABLES);
        let first = recorded(exec.as_ref()).await;
        let versions: Vec<i64> = first.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(versions, known(exec.statements()));

        // Twice more: each only reads what is recorded, and applies nothing again.
        let counting = CountingExecutor::new(exec.clone());
        let d = Dispatcher::new(counting.clone());
        d.migrate().await.expect("second run");
        d.migrate().await.expect("third run");
        let s = exec.statements();
        let once = [s.create_migrations_table, s.select_migrations];
        assert_eq!(*counting.seen.lock().unwrap(), [once, once].concat());
        assert_eq!(
            recorded(exec.as_ref()).await,
            first,
            "a migration was recorded again"
        );
        assert!(new_index(engine, exec.as_ref()).await.is_some());
    }
}

async fn a_database_migrated_by_a_newer_release_is_refused_and_left_unchanged(engine: Engine) {
    // The old schema, plus records of 0001 and of a migration from a newer release: this release must not
    // apply 0002 to it, nor use it at all.
    let (ctx, _, before) = old_database_with_rows(engine).await;
    let exec = ctx.exec.as_ref();
    exec.batch_execute(exec.statements().create_migrations_table)
        .await
        .unwrap();
    let supported = exec.statements().migrations.last().unwrap().version;
    let future = i64::from(supported) + 1;
    for (version, name) in [
        (1, "0001_initial".to_owned()),
        (future, format!("{future:04}_newer")),
    ] {
        let version = i32::try_from(version).unwrap();
        rows(exec, sql(engine).record, &[Value::I32(version), name.into()]).await;
    }
    let records = recorded(exec).await;

    for _ in 0..2 {
        let err = ctx.dispatcher().migrate().await.unwrap_err();
        assert!(
            matches!(err, DispatchError::SchemaTooNew { found, supported: s } if found == future && s == supported),
            "{err:?}"
        );
        assert_eq!(err.code(), "schema_too_new");
        let text = err.to_string();
        assert!(text.contains(&format!("version {future}")), "{text}");
        assert!(!text.contains("webhooks_dispatch_"), "{text}");
    }
    assert_eq!(recorded(exec).await, records);
    assert_eq!(
        new_index(engine, exec).await,
        None,
        "0002 was applied to a newer schema"
    );
    assert_eq!(dump(exec).await, before);
}

async fn a_failed_migration_leaves_no_record_and_is_applied_by_the_next_run(engine: Engine) {
    // 0002 indexes `endpoint_id`; with that column renamed its CREATE INDEX fails after its record was
    // written in the same transaction, while 0001 (IF NOT EXISTS throughout) still applies.
    let (ctx, _, _) = old_database_with_rows(engine).await;
    let exec = ctx.exec.as_ref();
    let rename = "ALTER TABLE webhooks_dispatch_outbox RENAME COLUMN endpoint_id TO endpoint_ref";
    exec.batch_execute(rename).await.unwrap();
    let before = dump_with(exec, DUMP_RENAMED).await;

    let err = ctx.dispatcher().migrate().await.unwrap_err();
    assert_eq!(err.code(), "storage", "{err:?}");
    assert_eq!(versions(exec).await, [1], "a failed migration was recorded");
    assert_eq!(new_index(engine, exec).await, None);
    assert_eq!(dump_with(exec, DUMP_RENAMED).await, before);

    let restore = "ALTER TABLE webhooks_dispatch_outbox RENAME COLUMN endpoint_ref TO endpoint_id";
    exec.batch_execute(restore).await.unwrap();
    ctx.dispatcher().migrate().await.expect("the retried run");
    assert_eq!(versions(exec).await, known(exec.statements()));
    assert!(new_index(engine, exec).await.is_some());
}

/// Runs everything for real, but reports one script as failed after it committed: the connection dropped
/// before the commit's reply arrived.
struct LostReply {
    inner: Exec,
    script: &'static str,
}

impl Executor for LostReply {
    fn statements(&self) -> &'static Statements {
        self.inner.statements()
    }
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        self.inner.query(sql, params)
    }
    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.inner.batch_execute(sql).await?;
            if sql == self.script {
                return Err(StorageError::from_driver(
                    Some("08006"),
                    true,
                    "injected: reply lost",
                ));
            }
            Ok(())
        })
    }
}

// Also the deterministic form of losing a race: a migration found recorded after its script failed was
// applied (by this process or another) and is not an error.
async fn a_migration_whose_commit_reply_was_lost_counts_as_applied(engine: Engine) {
    let statements = match engine {
        Engine::Sqlite => &webhooks_dispatch::store::sqlite::STATEMENTS,
        _ => &webhooks_dispatch::store::postgres::STATEMENTS,
    };
    for lost in statements.migrations {
        let (exec, _) = engine.connect().await;
        let lossy = LostReply {
            inner: exec.clone(),
            script: lost.sql,
        };
        Dispatcher::new(lossy).migrate().await.expect("migrate");
        assert_eq!(
            versions(exec.as_ref()).await,
            known(exec.statements()),
            "{}",
            lost.name
        );
        assert_eq!(table_names(engine, exec.as_ref()).await, TABLES);
    }
}
