//! Scenario 12: a backlog on disabled endpoints must not slow delivery to the rest.
//!
//! A disabled endpoint keeps its pending messages, unattempted, until it is enabled again, so a service whose
//! customers' receivers went away can hold a large backlog that every claim has to pass over. The backlog is
//! written in bulk with `generate_series`: pending rows, due since before the measured messages were enqueued
//! (and with older ids, so they come first in due order), on 100 endpoints of their own, which are then
//! disabled through `disable_endpoint`; then `VACUUM ANALYZE` and a `CHECKPOINT`, as for scenario 4's history.
//!
//! Each run is scenario 2's measurement (N messages over 100 answering endpoints, one worker); the reference
//! runs on empty tables, interleaved with the backlog runs (the machine is shared, see `tablesize`). After a
//! backlog run the backlog must be as it was written: no attempt on any of it, every row still pending.

use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::Row as _;
use webhooks_dispatch::Dispatcher;

use crate::delivery::{self, Plan, Stage};
use crate::env::{endpoint_url, register_endpoints, Env, Result, Tuning};
use crate::report::{Report, Sample, Samples};

const SCENARIO: &str = "12. disabled-endpoint backlog";
/// Disabled endpoints holding the backlog, besides the 100 measured ones.
pub const DISABLED_ENDPOINTS: usize = 100;
/// The brief's target: with the backlog, at least this share of the empty-table rate.
const TARGET_RATIO: f64 = 0.9;

/// Pending rows spread round robin over the endpoints in $2. Ids sort before real ULID ids (and apart from
/// scenario 4's history ids); payloads are about 300 bytes of JSON.
const PREFILL_BACKLOG: &str = r#"
INSERT INTO webhooks_dispatch_outbox
    (id, endpoint_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at)
SELECT 'msg_00d' || lpad(g::text, 23, '0'),
       e.ids[(1 + g % cardinality(e.ids))::int4],
       'invoice.paid',
       '{"type":"invoice.paid","id":"evt_' || lpad(g::text, 16, '0') || '","data":{"description":"'
           || repeat('x', 230) || '"}}',
       'pending', 0, now(), now(), now()
FROM (SELECT $2::text[] AS ids) AS e,
     generate_series(1, $1::int8) AS g"#;

/// Attempts on the backlog, and backlog rows still pending, unattempted and unleased.
const BACKLOG_STATE: &str = "\
SELECT
    (SELECT count(*) FROM webhooks_dispatch_attempts AS a
     JOIN webhooks_dispatch_outbox AS o ON o.id = a.message_id
     WHERE o.endpoint_id = ANY($1)),
    (SELECT count(*) FROM webhooks_dispatch_outbox
     WHERE endpoint_id = ANY($1) AND status = 'pending' AND attempts = 0 AND lease_token IS NULL)";

/// The backlog a stage was built with.
#[derive(Clone, Debug)]
pub struct Backlog {
    /// The disabled endpoints it belongs to.
    pub endpoints: Vec<String>,
    /// Its pending messages.
    pub messages: u64,
    /// Time taken to write it and disable its endpoints.
    pub written: Duration,
}

/// Writes `messages` pending messages on [`DISABLED_ENDPOINTS`] new endpoints, disables those, then settles
/// the outbox.
pub async fn prefill(setup: &Dispatcher<PgPool>, pool: &PgPool, messages: u64) -> Result<Backlog> {
    let started = Instant::now();
    // Port 443 is not a receiver of the run: were anything sent there, the check after the run would see it.
    let urls: Vec<String> = (0..DISABLED_ENDPOINTS).map(|i| endpoint_url(443, i)).collect();
    let endpoints = register_endpoints(setup, &urls).await?;
    sqlx::query(PREFILL_BACKLOG)
        .bind(i64::try_from(messages)?)
        .bind(&endpoints)
        .execute(pool)
        .await?;
    // Disabled after the rows are in, as when a receiver goes away with messages queued for it.
    for id in &endpoints {
        setup.disable_endpoint(id).await?;
    }
    // VACUUM cannot run inside a transaction block, so it is its own simple-protocol statement.
    sqlx::raw_sql("VACUUM ANALYZE webhooks_dispatch_outbox")
        .execute(pool)
        .await?;
    // Needs superuser; with a DATABASE_URL that lacks it the run just goes on with dirty buffers.
    let _ = sqlx::raw_sql("CHECKPOINT").execute(pool).await;
    Ok(Backlog {
        endpoints,
        messages,
        written: started.elapsed(),
    })
}

/// Fails unless the backlog is as written: no attempt on any of it, every row pending with no attempts.
async fn check_untouched(pool: &PgPool, backlog: &Backlog, label: &str) -> Result<()> {
    let row = sqlx::query(BACKLOG_STATE)
        .bind(&backlog.endpoints)
        .fetch_one(pool)
        .await?;
    let (attempts, pending): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    if attempts != 0 || pending != i64::try_from(backlog.messages)? {
        return Err(format!(
            "{label}: the disabled endpoints' messages have {attempts} attempts and {pending} of {} are still \
             pending and unattempted; expected 0 and all",
            backlog.messages
        )
        .into());
    }
    Ok(())
}

/// One backlog run on its own fresh stage, with the backlog checked afterwards.
async fn with_backlog(env: &Env, tuning: &Tuning, plan: &Plan) -> Result<Sample> {
    let stage = Stage::new(env, plan).await?;
    let sample = measure_and_check(env, tuning, plan, &stage).await;
    stage.close(env).await?;
    sample
}

/// Scenario 2's measurement on a backlog stage, then the backlog check; the sample's note says what was there.
async fn measure_and_check(env: &Env, tuning: &Tuning, plan: &Plan, stage: &Stage) -> Result<Sample> {
    let measured = delivery::measure(env, tuning, plan, stage).await?;
    let backlog = stage.backlog.as_ref().ok_or("the stage has no backlog")?;
    check_untouched(stage.pool(), backlog, plan.label).await?;
    let mut sample = measured.sample();
    sample.note.push_str(&format!(
        "\nplus {} pending msgs on {DISABLED_ENDPOINTS} disabled endpoints, none attempted and all still pending \
         afterwards (written in {:.1} s, not timed)",
        backlog.messages,
        backlog.written.as_secs_f64()
    ));
    Ok(sample)
}

/// Runs the empty-table reference and the run with `backlog` pending messages on disabled endpoints,
/// interleaved `rounds` times; adds the best of each and their ratio.
pub async fn scenario(
    env: &Env,
    report: &mut Report,
    tuning: &Tuning,
    messages: usize,
    backlog: u64,
    rounds: usize,
) {
    let reference = Plan::healthy("disabled_none", 1, messages);
    let mut loaded = Plan::healthy("disabled_backlog", 1, messages);
    loaded.disabled_backlog = backlog;
    let (mut none, mut with) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        none.push(delivery::run(env, tuning, &reference).await);
        with.push(with_backlog(env, tuning, &loaded).await);
    }
    let label = "1 worker, 100 endpoints, nothing else in the tables";
    if none.report(report, SCENARIO, "disabled.none", label) {
        report.ratio("disabled.none", "delivery.one_worker", "scenario 2 (noise check)");
    }
    let label = format!("same + {backlog} pending msgs on {DISABLED_ENDPOINTS} disabled endpoints");
    if with.report(report, SCENARIO, "disabled.backlog", &label) {
        report.ratio_at_least(
            "disabled.backlog",
            "disabled.none",
            "no disabled backlog",
            TARGET_RATIO,
            ">= 0.9× no disabled backlog",
        );
    }
}
