//! Scenario 4: does delivery slow down when the tables hold a long history of finished messages?
//!
//! The claim reads a partial index of pending rows only, so it should not. The history is written in bulk
//! with `generate_series` (delivered outbox rows with one attempt each, older ids and timestamps than any real
//! message, payloads of realistic size), then `VACUUM ANALYZE` and a `CHECKPOINT`, so the measured run sees
//! a settled table rather than the bulk load's write-back.
//!
//! The reference is an empty-table run with the same settings and size, interleaved with the history runs:
//! the machine is shared, so a reference measured minutes earlier could differ by more than the 10 % being
//! tested. Scenario 2's figure is shown beside it as a check on that noise.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;

use crate::delivery::{self, Plan, Stage};
use crate::env::{chain, Env, Result, Tuning};
use crate::report::{Report, Samples};

const SCENARIO: &str = "4. table-size independence";

/// Delivered history rows. Ids sort before real ULID ids (older), endpoints are spread round-robin, payloads
/// are about 300 bytes of JSON.
const PREFILL_OUTBOX: &str = r#"
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at)
SELECT 'msg_00' || lpad(g::text, 24, '0'),
       e.ids[(1 + g % cardinality(e.ids))::int4],
       'invoice.paid',
       '{"type":"invoice.paid","id":"evt_' || lpad(g::text, 16, '0') || '","data":{"description":"'
           || repeat('x', 230) || '"}}',
       'delivered', 1, t.at, t.at, t.at
FROM (SELECT array_agg(id ORDER BY id) AS ids FROM webhooks_dispatch_endpoints) AS e,
     generate_series(1, $1::int8) AS g,
     LATERAL (SELECT now() - interval '30 days' + g * interval '1 second' AS at) AS t"#;

/// One successful attempt per history row.
const PREFILL_ATTEMPTS: &str = "\
INSERT INTO webhooks_dispatch_attempts (message_id, attempt_no, attempted_at, status_code, outcome, latency_ms)
SELECT id, 1, updated_at, 200, 'delivered', 5 FROM webhooks_dispatch_outbox WHERE status = 'delivered'";

/// Writes `rows` finished messages and their attempts, then settles the tables; returns the time taken.
pub async fn prefill(pool: &PgPool, rows: u64) -> Result<Duration> {
    let started = Instant::now();
    sqlx::query(PREFILL_OUTBOX)
        .bind(i64::try_from(rows)?)
        .execute(pool)
        .await?;
    sqlx::query(PREFILL_ATTEMPTS).execute(pool).await?;
    // VACUUM cannot run inside a transaction block, so each is its own simple-protocol statement.
    sqlx::raw_sql("VACUUM ANALYZE webhooks_dispatch_outbox")
        .execute(pool)
        .await?;
    sqlx::raw_sql("VACUUM ANALYZE webhooks_dispatch_attempts")
        .execute(pool)
        .await?;
    // Needs superuser; with a DATABASE_URL that lacks it the run just goes on with dirty buffers.
    let _ = sqlx::raw_sql("CHECKPOINT").execute(pool).await;
    Ok(started.elapsed())
}

/// Runs the empty-table reference and the run with `rows` finished rows, interleaved `rounds` times; adds the
/// best of each and their ratio.
pub async fn scenario(
    env: &Env,
    report: &mut Report,
    tuning: &Tuning,
    messages: usize,
    rows: u64,
    rounds: usize,
) {
    let empty_plan = Plan::healthy("size_empty", 1, messages);
    let mut full_plan = Plan::healthy("size_full", 1, messages);
    full_plan.finished_rows = rows;
    // The history is written once; later rounds find the previous rounds' messages (and endpoints) in it too.
    let full_stage = match Stage::new(env, &full_plan).await {
        Ok(stage) => stage,
        Err(e) => return report.error("table size: writing the history", &chain(&*e)),
    };
    let (mut empty, mut full) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        empty.push(delivery::run(env, tuning, &empty_plan).await);
        let measured = delivery::measure(env, tuning, &full_plan, &full_stage).await;
        full.push(measured.map(|m| m.sample()));
    }
    let prefill = full_stage.prefill.unwrap_or_default();
    if let Err(e) = full_stage.close(env).await {
        report.error("table size: dropping the database", &chain(&*e));
    }

    let label = "1 worker, empty tables (reference, interleaved)";
    if empty.report(report, SCENARIO, "tablesize.empty", label) {
        report.ratio(
            "tablesize.empty",
            "delivery.one_worker",
            "scenario 2 (noise check)",
        );
    }
    let label = format!("1 worker, {rows} finished rows in the tables");
    if full.report(report, SCENARIO, "tablesize.full", &label) {
        report.append_note(
            "tablesize.full",
            &format!("history written in {:.1} s (not timed)", prefill.as_secs_f64()),
        );
        report.ratio("tablesize.full", "tablesize.empty", "empty tables");
        if let (Some(full), Some(empty)) = (report.value("tablesize.full"), report.value("tablesize.empty")) {
            let within = (full / empty - 1.0).abs() <= 0.10;
            report.target("tablesize.full", "within 10 % of empty", within);
        }
    }
}
