//! Scenario 7: what one claim costs the database, measured on the library's own claim statement.
//!
//! For each backlog a fresh database is filled through the library (endpoints registered, messages enqueued
//! with `dispatch_many`), leased rows are stamped as a worker would have left them, and the tables are
//! analyzed. Then `store::postgres::STATEMENTS.claim_due` — the exact text the library runs — is executed
//! under `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` inside a transaction that is rolled back, with parameters
//! shaped as `Dispatcher::claim` passes them: a fresh lease token, now + the worker's lease, now, a limit of
//! 200 (the worker's claim batch), the endpoints this process holds messages for with their counts, and the
//! per-endpoint cap 16.
//!
//! The figure is rows locked per claimed row: the actual rows (× loops) of every `LockRows` node anywhere in
//! the plan tree (CTEs, subplans and init plans included, so a rewritten statement is measured the same way),
//! divided by the rows the statement returned. A claim that locks what it does not take makes concurrent
//! claims skip those rows and costs heap visits and WAL for nothing. The rows returned are taken from the
//! plan's root and checked against a real execution of the statement (also rolled back), which must also
//! respect the caps: at most the limit, at most cap minus held per endpoint, nothing already leased.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row as _;
use webhooks_dispatch::store::postgres::STATEMENTS;

use crate::env::{chain, endpoint_url, enqueue_all, setup_endpoints, Env, Result};
use crate::report::Report;

const SCENARIO: &str = "7. claim cost";
/// Rows per claim: the worker's default claim batch.
const LIMIT: i64 = webhooks_dispatch::DEFAULT_CLAIM_BATCH as i64;
/// Per-endpoint cap: the library's and the service's default.
const CAP: i64 = webhooks_dispatch::DEFAULT_PER_ENDPOINT_CONCURRENCY as i64;
/// The worker's lease with the default attempt timeout: two deadlines plus a minute.
const LEASE: Duration = Duration::from_secs(2 * 10 + 60);
/// Measured executions per backlog, after one warm-up; the median time is reported.
const RUNS: usize = 5;
/// The brief's target for rows locked per claimed row.
const LOCKED_TARGET: f64 = 1.5;

/// Endpoints sharing one shape of backlog.
#[derive(Clone, Copy, Debug)]
struct Group {
    endpoints: usize,
    /// Messages leased to this process (in flight), the oldest of each endpoint's queue.
    leased: usize,
    /// Due, unleased messages behind them.
    due: usize,
}

/// One backlog to claim from; groups are enqueued in order (earlier groups' messages are older).
struct Backlog {
    key: &'static str,
    label: String,
    groups: Vec<Group>,
}

impl Backlog {
    /// Every group spelled out, for the note.
    fn description(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|g| match g.leased {
                0 => format!("{} endpoint(s) × {} due", g.endpoints, g.due),
                n => format!(
                    "{} endpoint(s) × ({n} leased to this process + {} due behind them, enqueued first)",
                    g.endpoints, g.due
                ),
            })
            .collect();
        groups.join(" + ")
    }
}

/// The three backlogs of the brief; `divisor` shrinks the due counts for `--quick` (the cap stays 16).
fn backlogs(divisor: usize) -> Vec<Backlog> {
    let d = |n: usize| (n / divisor.max(1)).max(1);
    let hot = Group {
        endpoints: 1,
        leased: 0,
        due: d(5_000),
    };
    let spread = Group {
        endpoints: 100,
        leased: 0,
        due: d(50),
    };
    let busy = Group {
        endpoints: 10,
        leased: CAP as usize,
        due: d(500),
    };
    vec![
        Backlog {
            key: "hot",
            label: format!("1 endpoint × {} due", hot.due),
            groups: vec![hot],
        },
        Backlog {
            key: "spread",
            label: format!("100 endpoints × {} due", spread.due),
            groups: vec![spread],
        },
        Backlog {
            key: "busy",
            label: format!("10 busy + 100 × {} due", spread.due),
            groups: vec![busy, spread],
        },
    ]
}

/// Runs every backlog and adds its figures; a failed backlog is reported and the others still run.
pub async fn scenario(env: &Env, report: &mut Report, divisor: usize) {
    for backlog in backlogs(divisor) {
        match measure(env, &backlog).await {
            Ok(m) => m.report(report, &backlog),
            Err(e) => report.error(&format!("claim cost ({})", backlog.label), &chain(&*e)),
        }
    }
}

/// Stamps the oldest $3 pending messages of each endpoint in $1 with lease $2, as a worker's claim would.
const LEASE_OLDEST: &str = "\
UPDATE webhooks_dispatch_outbox AS o
SET lease_token = $2::text, lease_expires_at = now() + $4::float8 * interval '1 second'
FROM (SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS n
      FROM webhooks_dispatch_outbox WHERE status = 'pending' AND endpoint_id = ANY ($1::text[])) AS r
WHERE o.id = r.id AND r.n <= $3::int8";

/// The parameters of one claim, in the statement's order ($1..$7).
struct Params {
    token: String,
    lease_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
    held_endpoints: Vec<String>,
    held_counts: Vec<i64>,
}

impl Params {
    fn new(held: &[(String, i64)]) -> Params {
        let now = Utc::now();
        Params {
            token: format!("lease_{}", ulid::Ulid::new()),
            lease_expires_at: now + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::MAX),
            now,
            held_endpoints: held.iter().map(|(e, _)| e.clone()).collect(),
            held_counts: held.iter().map(|(_, n)| *n).collect(),
        }
    }

    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.token)
            .bind(self.lease_expires_at)
            .bind(self.now)
            .bind(LIMIT)
            .bind(&self.held_endpoints)
            .bind(CAP)
            .bind(&self.held_counts)
            // No owner at its cap.
            .bind(Vec::<String>::new())
    }
}

/// A database holding one backlog.
struct Prepared {
    pool: PgPool,
    db: crate::env::Database,
    /// Endpoints this process holds leased messages for, with how many.
    held: Vec<(String, i64)>,
    /// Endpoint id → its group's index.
    group_of: HashMap<String, usize>,
}

async fn prepare(env: &Env, backlog: &Backlog) -> Result<Prepared> {
    let db = env.fresh_database(&format!("claim_{}", backlog.key)).await?;
    let pool = env.pool(&db, 2, false).await?;
    let setup = env.builder(pool.clone()).build();
    let total: usize = backlog.groups.iter().map(|g| g.endpoints).sum();
    // Nothing is ever sent to these endpoints; the claim only joins them.
    let urls: Vec<String> = (0..total).map(|i| endpoint_url(443, i)).collect();
    let endpoints = setup_endpoints(&setup, &urls).await?;
    let (mut targets, mut first, mut group_of, mut members) = (Vec::new(), 0, HashMap::new(), Vec::new());
    for (g, group) in backlog.groups.iter().enumerate() {
        // Round robin within the group, as traffic to several endpoints arrives interleaved.
        for k in 0..group.endpoints * (group.leased + group.due) {
            targets.push(first + k % group.endpoints);
        }
        let ids = endpoints[first..first + group.endpoints].to_vec();
        group_of.extend(ids.iter().map(|id| (id.clone(), g)));
        members.push(ids);
        first += group.endpoints;
    }
    enqueue_all(&setup, &endpoints, &targets).await?;
    let mut held = Vec::new();
    for (group, ids) in backlog.groups.iter().zip(&members).filter(|(g, _)| g.leased > 0) {
        let n = i64::try_from(group.leased)?;
        held.extend(ids.iter().map(|id| (id.clone(), n)));
        let stamped = sqlx::query(LEASE_OLDEST)
            .bind(ids)
            .bind(format!("lease_{}", ulid::Ulid::new()))
            .bind(n)
            .bind(LEASE.as_secs_f64())
            .execute(&pool)
            .await?;
        let want = ids.len() * group.leased;
        if stamped.rows_affected() != u64::try_from(want)? {
            return Err(format!("leased {} rows, expected {want}", stamped.rows_affected()).into());
        }
    }
    // A live table has statistics (autovacuum analyzes it); a freshly loaded one does not yet.
    sqlx::raw_sql("ANALYZE webhooks_dispatch_outbox, webhooks_dispatch_endpoints")
        .execute(&pool)
        .await?;
    Ok(Prepared {
        pool,
        db,
        held,
        group_of,
    })
}

/// What the plans of one backlog said.
struct Measured {
    locked: f64,
    returned: f64,
    claimed: usize,
    ideal: usize,
    execution_ms: Vec<f64>,
    planning_ms: f64,
    buffers: f64,
    lock_nodes: usize,
}

async fn measure(env: &Env, backlog: &Backlog) -> Result<Measured> {
    let prepared = prepare(env, backlog).await?;
    let result = explain_runs(&prepared, backlog).await;
    prepared.pool.close().await;
    env.drop_database(&prepared.db).await?;
    result
}

async fn explain_runs(p: &Prepared, backlog: &Backlog) -> Result<Measured> {
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", STATEMENTS.claim_due);
    let mut plans = Vec::with_capacity(RUNS + 1);
    for _ in 0..=RUNS {
        let params = Params::new(&p.held);
        let mut tx = p.pool.begin().await?;
        let row = params.bind(sqlx::query(&sql)).fetch_one(&mut *tx).await?;
        let plan = plan_json(&row)?;
        tx.rollback().await?;
        plans.push(Explained::from_json(&plan)?);
    }
    // The first execution warms the caches and is not counted.
    let measured = &plans[1..];
    let last = measured.last().ok_or("no plan")?;
    let claimed = claim_once(p).await?;
    if (last.returned - claimed as f64).abs() > 0.5 {
        return Err(format!(
            "the plan's root says {} rows, executing the statement returned {claimed}",
            last.returned
        )
        .into());
    }
    let ideal = ideal_claim(backlog);
    let mut execution_ms: Vec<f64> = measured.iter().map(|e| e.execution_ms).collect();
    execution_ms.sort_by(f64::total_cmp);
    Ok(Measured {
        locked: last.locked,
        returned: last.returned,
        claimed,
        ideal,
        planning_ms: last.planning_ms,
        buffers: last.buffers,
        lock_nodes: last.lock_nodes,
        execution_ms,
    })
}

/// The single json column of an EXPLAIN (FORMAT JSON) row. sqlx decodes `json` only with its `json` feature,
/// which nothing else here needs; the value's wire form (text or binary) is the JSON text itself either way.
fn plan_json(row: &PgRow) -> Result<serde_json::Value> {
    let text: &str = row.try_get_unchecked(0)?;
    Ok(serde_json::from_str(text)?)
}

/// Runs the statement for real (rolled back) and checks the caps; returns the rows it claimed.
async fn claim_once(p: &Prepared) -> Result<usize> {
    let params = Params::new(&p.held);
    let mut tx = p.pool.begin().await?;
    let rows = params
        .bind(sqlx::query(STATEMENTS.claim_due))
        .fetch_all(&mut *tx)
        .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<std::result::Result<_, _>>()?;
    let leased_before: i64 = sqlx::query(
        "SELECT count(*) FROM webhooks_dispatch_outbox WHERE id = ANY ($1::text[]) AND lease_token <> $2::text",
    )
    .bind(&ids)
    .bind(&params.token)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    tx.rollback().await?;
    let mut per_endpoint: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        *per_endpoint.entry(r.try_get::<String, _>(1)?).or_default() += 1;
    }
    let held: HashMap<&str, i64> = p.held.iter().map(|(e, n)| (e.as_str(), *n)).collect();
    for (endpoint, n) in &per_endpoint {
        let free = CAP - held.get(endpoint.as_str()).copied().unwrap_or(0);
        if *n > free || !p.group_of.contains_key(endpoint) {
            return Err(format!("claimed {n} for endpoint {endpoint}, which has {free} free slots").into());
        }
    }
    if i64::try_from(rows.len())? > LIMIT || leased_before != 0 {
        return Err(format!(
            "claimed {} rows (limit {LIMIT}), {leased_before} of them leased already",
            rows.len()
        )
        .into());
    }
    Ok(rows.len())
}

/// What a perfect claim takes: the limit, or less when the free slots of the endpoints with due rows are
/// fewer.
fn ideal_claim(backlog: &Backlog) -> usize {
    let available: usize = backlog
        .groups
        .iter()
        .map(|g| g.endpoints * g.due.min((CAP as usize).saturating_sub(g.leased)))
        .sum();
    available.min(LIMIT as usize)
}

impl Measured {
    fn report(&self, report: &mut Report, backlog: &Backlog) {
        let ratio = self.locked / self.returned.max(1.0);
        let key = format!("claim.{}.locked_per_claimed", backlog.key);
        let median = self.execution_ms[self.execution_ms.len() / 2];
        let runs: Vec<String> = self.execution_ms.iter().map(|t| format!("{t:.2}")).collect();
        let label = format!("{}: locked ÷ claimed", backlog.label);
        let figure = report.add(SCENARIO, &key, &label, ratio, "×");
        figure.note(format!(
            "{}; {:.0} rows locked by {} LockRows node(s), {} claimed (ideal {}: limit {LIMIT}, cap {CAP} minus \
             held); {:.0} shared buffers hit+read",
            backlog.description(),
            self.locked,
            self.lock_nodes,
            self.claimed,
            self.ideal,
            self.buffers
        ));
        if self.returned < 0.5 {
            figure.target("<= 1.5 (nothing claimed)", false);
        } else {
            figure.target("<= 1.5", ratio <= LOCKED_TARGET);
        }
        let key = format!("claim.{}.execution", backlog.key);
        report
            .add(
                SCENARIO,
                &key,
                "  server execution time per claim (median)",
                median,
                "ms",
            )
            .note(format!(
                "EXPLAIN ANALYZE, {RUNS} runs after a warm-up, each rolled back: {} ms; planning {:.2} ms",
                runs.join(", "),
                self.planning_ms
            ));
    }
}

/// The parts of one EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) result this scenario reads.
#[derive(Debug, PartialEq)]
struct Explained {
    /// Σ actual rows × loops over every LockRows node.
    locked: f64,
    /// How many LockRows nodes there were.
    lock_nodes: usize,
    /// Rows the root node produced: what the statement returned.
    returned: f64,
    execution_ms: f64,
    planning_ms: f64,
    /// Shared blocks hit + read by the whole execution (the root's counts include its children's).
    buffers: f64,
}

impl Explained {
    fn from_json(json: &serde_json::Value) -> Result<Explained> {
        let top = json.get(0).ok_or("EXPLAIN returned no plan")?;
        let root = top.get("Plan").ok_or("EXPLAIN result without \"Plan\"")?;
        let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        let (mut locked, mut lock_nodes) = (0.0, 0);
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            if node.get("Node Type").and_then(|t| t.as_str()) == Some("LockRows") {
                lock_nodes += 1;
                locked += num(node, "Actual Rows").unwrap_or(0.0) * num(node, "Actual Loops").unwrap_or(1.0);
            }
            if let Some(children) = node.get("Plans").and_then(|p| p.as_array()) {
                stack.extend(children);
            }
        }
        Ok(Explained {
            locked,
            lock_nodes,
            returned: num(root, "Actual Rows").ok_or("plan root without \"Actual Rows\"")?
                * num(root, "Actual Loops").unwrap_or(1.0),
            execution_ms: num(top, "Execution Time").ok_or("no \"Execution Time\"")?,
            planning_ms: num(top, "Planning Time").unwrap_or(0.0),
            buffers: num(root, "Shared Hit Blocks").unwrap_or(0.0)
                + num(root, "Shared Read Blocks").unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_rows_are_summed_over_the_whole_tree_with_loops() {
        let plan = serde_json::json!([{
            "Plan": {
                "Node Type": "ModifyTable", "Actual Rows": 16, "Actual Loops": 1,
                "Shared Hit Blocks": 100, "Shared Read Blocks": 5,
                "Plans": [
                    {"Node Type": "LockRows", "Parent Relationship": "InitPlan", "Actual Rows": 800,
                     "Actual Loops": 1, "Plans": [{"Node Type": "Index Scan", "Actual Rows": 800}]},
                    {"Node Type": "Nested Loop", "Actual Rows": 16, "Plans": [
                        {"Node Type": "LockRows", "Actual Rows": 2, "Actual Loops": 8}
                    ]}
                ]
            },
            "Planning Time": 0.5,
            "Execution Time": 3.25
        }]);
        let e = Explained::from_json(&plan).unwrap();
        assert_eq!(
            e,
            Explained {
                locked: 816.0,
                lock_nodes: 2,
                returned: 16.0,
                execution_ms: 3.25,
                planning_ms: 0.5,
                buffers: 105.0,
            }
        );
    }

    #[test]
    fn a_plan_without_execution_time_is_refused() {
        let plan = serde_json::json!([{"Plan": {"Node Type": "Result", "Actual Rows": 1}}]);
        assert!(Explained::from_json(&plan).is_err());
        assert!(Explained::from_json(&serde_json::json!([])).is_err());
    }

    #[test]
    fn the_ideal_claim_respects_limit_caps_and_held_slots() {
        let b = backlogs(1);
        let ideal: Vec<usize> = b.iter().map(ideal_claim).collect();
        // One endpoint: its cap. 100 × 50: the limit. Busy endpoints have no free slot: the limit from the rest.
        assert_eq!(ideal, vec![16, 200, 200]);
        assert_eq!(ideal_claim(&backlogs(1000)[1]), 100);
    }
}
