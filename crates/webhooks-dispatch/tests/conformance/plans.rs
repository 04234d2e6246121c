//! PostgreSQL plans that must not depend on the planner's statistics. A table with a long finished history
//! that was analyzed while nothing was pending (autovacuum's usual view of a busy outbox: the analyze
//! threshold is a fraction of the table, so a backlog of thousands on a table of millions never triggers it)
//! estimates every pending-only index at about one row; a statement that can reach its rows either by id or
//! through that index then walks the whole backlog per call. SQLite's plans are checked by the adapter's
//! own unit test (`no_statement_joins_unnested_inputs_or_scans_a_table`).

use webhooks_dispatch::store::{Executor, Value};
use webhooks_dispatch::NewMessage;

use crate::support::{Ctx, Engine};

crate::postgres_only!(completion_and_release_reach_their_rows_by_id_when_statistics_say_nothing_is_pending,);

const HISTORY: usize = 3_000;
const BACKLOG: usize = 500;
/// Rows completed (or released) by the explained statement.
const TAKEN: usize = 10;
const TOKEN: &str = "plan-test-lease";

/// Every scan of the outbox in an `EXPLAIN (ANALYZE)` text plan, as (line, rows read × loops).
fn outbox_scans(plan: &[String]) -> Vec<(String, u64)> {
    let number = |line: &str, key: &str| -> u64 {
        let at = line.rfind(key).expect("an actual figure") + key.len();
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    let mut scans = Vec::new();
    for (i, line) in plan.iter().enumerate() {
        let outbox = line.contains("Scan") && line.contains(" on webhooks_dispatch_outbox ");
        if !outbox || line.contains("(never executed)") {
            continue;
        }
        let loops = number(line, " loops=");
        // Rows read and thrown away count too: they are listed under the node, before its first child.
        let removed: u64 = plan[i + 1..]
            .iter()
            .take_while(|l| !l.contains("->"))
            .filter(|l| l.contains("Rows Removed by"))
            .map(|l| number(l, ": "))
            .sum();
        scans.push((line.trim().to_owned(), (number(line, " rows=") + removed) * loops));
    }
    scans
}

async fn explain(exec: &dyn Executor, statement: &'static str, params: &[Value]) -> Vec<String> {
    // The executor takes statements as 'static text (they are constants everywhere else).
    let sql: &'static str = Box::leak(format!("EXPLAIN (ANALYZE) {statement}").into_boxed_str());
    let rows = exec.query(sql, params).await.expect("explain");
    rows.iter().map(|r| r.text(0).expect("plan line")).collect()
}

async fn completion_and_release_reach_their_rows_by_id_when_statistics_say_nothing_is_pending(
    engine: Engine,
) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    let (endpoint, _) = ctx.endpoint(&d).await;
    let batch = |n: usize| {
        (0..n)
            .map(|i| NewMessage::new(endpoint.clone(), "invoice.paid", serde_json::json!({ "i": i })))
            .collect::<Vec<_>>()
    };
    for _ in 0..HISTORY / 1000 {
        d.dispatch_many(batch(1000)).await.expect("history");
    }
    let exec = ctx.exec.as_ref();
    exec.batch_execute(
        "UPDATE webhooks_dispatch_outbox SET status = 'delivered', attempts = 1; \
         ANALYZE webhooks_dispatch_outbox",
    )
    .await
    .expect("finish and analyze the history");
    d.dispatch_many(batch(BACKLOG)).await.expect("backlog");
    exec.batch_execute(
        "UPDATE webhooks_dispatch_outbox SET lease_token = 'plan-test-lease', \
         lease_expires_at = now() + interval '1 hour' WHERE status = 'pending'",
    )
    .await
    .expect("lease the backlog");
    let pending = exec
        .query(
            "SELECT id FROM webhooks_dispatch_outbox WHERE status = 'pending' ORDER BY id",
            &[],
        )
        .await
        .expect("pending ids");
    assert_eq!(pending.len(), BACKLOG);
    let ids: Vec<String> = pending.iter().map(|r| r.text(0).unwrap()).collect();
    let s = exec.statements();

    let done = &ids[..TAKEN];
    let now = chrono::Utc::now();
    let complete = [
        Value::from(done.to_vec()),
        Value::from(vec![TOKEN.to_owned(); TAKEN]),
        Value::from(vec!["delivered".to_owned(); TAKEN]),
        Value::from(vec![Some(now); TAKEN]),
        Value::from(vec![Some(200); TAKEN]),
        Value::from(vec![3_i64; TAKEN]),
        Value::from(vec![None::<chrono::DateTime<chrono::Utc>>; TAKEN]),
        Value::from(vec![None::<String>; TAKEN]),
    ];
    let released = &ids[TAKEN..2 * TAKEN];
    let release = [
        Value::from(released.to_vec()),
        Value::from(vec![TOKEN.to_owned(); TAKEN]),
    ];
    for (name, statement, params) in [
        ("complete_attempts", s.complete_attempts, &complete[..]),
        ("release_claims", s.release_claims, &release[..]),
    ] {
        let plan = explain(exec, statement, params).await;
        let scans = outbox_scans(&plan);
        assert!(
            !scans.is_empty(),
            "{name}: no scan of the outbox in\n{}",
            plan.join("\n")
        );
        let visited: u64 = scans.iter().map(|(_, rows)| rows).sum();
        assert!(
            visited <= 2 * TAKEN as u64,
            "{name} visited {visited} outbox rows to change {TAKEN} (backlog {BACKLOG}):\n{}",
            plan.join("\n")
        );
    }
    // And the statements did their work.
    let message = d.message(&ids[0]).await.unwrap();
    assert_eq!(message.state, webhooks_dispatch::MessageState::Delivered);
    let still_leased = exec
        .query(
            "SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(still_leased[0].int(0).unwrap(), (BACKLOG - 2 * TAKEN) as i64);
}
