//! Optional diagnostics (`--pg-stats`): how much server time the worker's two hot statements took during a
//! delivery run, from `pg_stat_statements`. Off by default so the measured server runs a stock
//! configuration; when on, the throwaway cluster preloads the extension and every benchmark database
//! creates it.

use sqlx::postgres::PgPool;
use sqlx::Row as _;

/// Cumulative calls and execution time of the claim and complete statements in one database.
#[derive(Clone, Copy, Debug, Default)]
pub struct StatementStats {
    claim_calls: i64,
    claim_ms: f64,
    complete_calls: i64,
    complete_ms: f64,
}

/// Sums per statement for the current database. `SET lease_token = $1` occurs only in the library's claim
/// (`CLAIM_DUE`); `SET status = CASE` occurs only in its bulk completion (`COMPLETE_ATTEMPTS`).
const READ: &str = "\
SELECT coalesce(sum(calls) FILTER (WHERE query LIKE '%SET lease_token = $1%'), 0)::int8,
       coalesce(sum(total_exec_time) FILTER (WHERE query LIKE '%SET lease_token = $1%'), 0)::float8,
       coalesce(sum(calls) FILTER (WHERE query LIKE '%SET status = CASE%'), 0)::int8,
       coalesce(sum(total_exec_time) FILTER (WHERE query LIKE '%SET status = CASE%'), 0)::float8
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";

impl StatementStats {
    /// The counters now, or `None` if the extension is not available.
    pub async fn read(pool: &PgPool) -> Option<StatementStats> {
        let row = sqlx::query(READ).fetch_one(pool).await.ok()?;
        Some(StatementStats {
            claim_calls: row.try_get(0).ok()?,
            claim_ms: row.try_get(1).ok()?,
            complete_calls: row.try_get(2).ok()?,
            complete_ms: row.try_get(3).ok()?,
        })
    }

    /// What happened between `before` and these counters.
    pub fn since(&self, before: &StatementStats) -> StatementStats {
        StatementStats {
            claim_calls: self.claim_calls - before.claim_calls,
            claim_ms: self.claim_ms - before.claim_ms,
            complete_calls: self.complete_calls - before.complete_calls,
            complete_ms: self.complete_ms - before.complete_ms,
        }
    }

    /// One line for a figure's note.
    pub fn describe(&self) -> String {
        let per = |ms: f64, calls: i64| if calls > 0 { ms / calls as f64 } else { 0.0 };
        format!(
            "server time: {} claims × {:.2} ms = {:.2} s, {} completions × {:.2} ms = {:.2} s",
            self.claim_calls,
            per(self.claim_ms, self.claim_calls),
            self.claim_ms / 1000.0,
            self.complete_calls,
            per(self.complete_ms, self.complete_calls),
            self.complete_ms / 1000.0
        )
    }
}
