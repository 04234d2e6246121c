//! PostgreSQL plans that must not depend on the planner's statistics. Statistics lag the table: a long
//! finished history analyzed while nothing was pending (autovacuum's usual view of a busy outbox, since the
//! analyze threshold is a fraction of the table, so a backlog of thousands on a table of millions never
//! triggers it) estimates every pending-only index at about one row; a table analyzed during a backlog
//! estimates a claim's picks at thousands. A statement that can reach its rows either by id or by a scan
//! then walks the whole backlog, or the whole table, on every call. Each statement here is explained (and
//! run) under both kinds of statistics, and the outbox rows its scans read are counted. SQLite's plans are
//! checked by the adapter's own unit test (`no_statement_joins_unnested_inputs_or_scans_a_table`).

use webhooks_dispatch::store::{Executor, Value};
use webhooks_dispatch::NewMessage;

use crate::support::{Ctx, Engine};

crate::postgres_only!(claim_completion_and_release_reach_their_rows_by_id_whatever_the_statistics_say);

const HISTORY: usize = 3_000;
const BACKLOG: usize = 500;
/// Of the backlog, held by another drain (the newest); the rest is free to claim.
const LEASED: usize = 470;
/// Rows completed (or released) by the explained statement.
const TAKEN: usize = 10;
const TOKEN: &str = "plan-test-lease";
/// The per-endpoint cap the claim passes.
const CAP: usize = webhooks_dispatch::DEFAULT_PER_ENDPOINT_CONCURRENCY;

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

async fn claim_completion_and_release_reach_their_rows_by_id_whatever_the_statistics_say(engine: Engine) {
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
    // The newest of the backlog are held by another drain; the oldest stay free for the claim below.
    exec.batch_execute(
        "UPDATE webhooks_dispatch_outbox SET lease_token = 'plan-test-lease', \
         lease_expires_at = now() + interval '1 hour' WHERE id IN (SELECT id FROM webhooks_dispatch_outbox \
         WHERE status = 'pending' ORDER BY id DESC LIMIT 470)",
    )
    .await
    .expect("lease most of the backlog");
    let leased = exec
        .query(
            "SELECT id FROM webhooks_dispatch_outbox WHERE lease_token = 'plan-test-lease' ORDER BY id",
            &[],
        )
        .await
        .expect("leased ids");
    assert_eq!(leased.len(), LEASED);
    let ids: Vec<String> = leased.iter().map(|r| r.text(0).unwrap()).collect();
    let s = exec.statements();

    // Statistics say nothing is pending: completion and release must still go by id.
    let now = chrono::Utc::now();
    let done = &ids[..TAKEN];
    let complete = [
        Value::from(done.to_vec()),
        Value::from(vec![TOKEN.to_owned(); TAKEN]),
        Value::from(vec!["delivered".to_owned(); TAKEN]),
        Value::from(vec![Some(now); TAKEN]),
        Value::from(vec![Some(200); TAKEN]),
        Value::from(vec![3_i64; TAKEN]),
        Value::from(vec![None::<chrono::DateTime<chrono::Utc>>; TAKEN]),
        Value::from(vec![None::<String>; TAKEN]),
        Value::Bool(true),
        Value::from(now - chrono::Duration::days(5)),
        Value::from(3_i64),
        Value::from(1_000_i64),
        Value::from(60_000_i64),
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
    // A worker's lease renewal reads each of its rows by id three times (still held, locked, extended).
    let renewed = &ids[2 * TAKEN..3 * TAKEN];
    let renew = [
        Value::from(renewed.to_vec()),
        Value::from(vec![TOKEN.to_owned(); TAKEN]),
        Value::from(now + chrono::Duration::hours(2)),
    ];
    let plan = explain(exec, s.renew_leases, &renew).await;
    let visited: u64 = outbox_scans(&plan).iter().map(|(_, rows)| rows).sum();
    assert!(
        (1..=3 * TAKEN as u64).contains(&visited),
        "renew_leases visited {visited} outbox rows to renew {TAKEN} (backlog {BACKLOG}):\n{}",
        plan.join("\n")
    );
    let message = d.message(&ids[0]).await.unwrap();
    assert_eq!(message.state, webhooks_dispatch::MessageState::Delivered);

    // Statistics now see the backlog, so a claim's picks are estimated at hundreds: it must still update
    // exactly the rows it picked, by id, instead of scanning the table to join them.
    exec.batch_execute("ANALYZE webhooks_dispatch_outbox")
        .await
        .expect("analyze the backlog");
    let claim = [
        Value::from("plan-test-claim"),
        Value::from(now + chrono::Duration::hours(1)),
        Value::from(now),
        Value::I64(200),
        Value::TextArray(Vec::new()),
        Value::I64(CAP as i64),
        Value::I64Array(Vec::new()),
        Value::TextArray(Vec::new()),
    ];
    let plan = explain(exec, s.claim_due, &claim).await;
    let visited: u64 = outbox_scans(&plan).iter().map(|(_, rows)| rows).sum();
    // Each claimed row is read three times (counted, locked, updated), plus the skip scan's probes.
    assert!(
        visited <= 3 * CAP as u64 + 4,
        "claim_due visited {visited} outbox rows to claim {CAP} (backlog {BACKLOG}):\n{}",
        plan.join("\n")
    );
    let claimed = ctx
        .scalar(
            "SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token = 'plan-test-claim'",
            &[],
        )
        .await;
    assert_eq!(claimed, CAP as i64, "the claim took the endpoint's cap");
    let still_leased = ctx
        .scalar(
            "SELECT count(*) FROM webhooks_dispatch_outbox WHERE lease_token = 'plan-test-lease'",
            &[],
        )
        .await;
    assert_eq!(still_leased, (LEASED - 2 * TAKEN) as i64);
}
