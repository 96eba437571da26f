//! The results rollup (migration `20261201000006_results_rollup.sql`)
//! holds exactly the aggregate of the settled rows of `phone_calls`: after
//! its migration's backfill over rows written before it (some not yet
//! given a funnel stage), after the funnel-stage backfill, after commits,
//! after the retention pass erases personal data, and after SQL changes
//! the store never makes itself (a row deleted, a settled row unsettled,
//! a settled row's target and talk time changed). Each check compares the
//! three rollup tables with the same aggregates computed from the rows.
//!
//! SQLite on a temporary file; PostgreSQL on a fresh database at
//! `TEST_DATABASE_URL` (skipped visibly when unset or unreachable, never
//! with `CI=true`).

mod common;

use std::path::Path;

use bonde_pressure_core::results::{CampaignResults, Interval, ResultsQuery, ResultsReport};
use bonde_pressure_core::{Call, CallStore, PersonalDataStore, RetentionPass, Tz};
use bonde_pressure_store::conformance::{Outcome, build_call};
use bonde_pressure_store::{PgCallStore, SqliteCallStore};
use chrono::{DateTime, TimeDelta, Utc};
use sqlx::migrate::Migrator;
use sqlx::{PgPool, SqlitePool};

const ROLLUP: i64 = 20261201000006;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

/// Calls of two widgets over two days: every outcome (live and settled),
/// several talk times, edges off the hour.
fn calls() -> Vec<Call> {
    let base = utc("2026-10-01T10:17:00.250000Z");
    let mut out = Vec::new();
    for i in 0..90i64 {
        let outcome = match i % 13 {
            11 => Outcome::Completed {
                talk_secs: Some((i % 5) as u32 * 30),
            },
            12 => Outcome::Completed { talk_secs: None },
            k => Outcome::ALL[k as usize],
        };
        let widget = if i % 7 == 0 { 61 } else { 60 };
        out.push(build_call(
            widget,
            base + TimeDelta::minutes(i * 31),
            outcome,
        ));
    }
    out
}

fn queries() -> Vec<ResultsQuery> {
    let w = bonde_pressure_core::WidgetId::new(60).unwrap();
    vec![
        ResultsQuery::new(
            w,
            utc("2026-10-01T00:00:00Z"),
            utc("2026-10-04T00:00:00Z"),
            Tz::America__Sao_Paulo,
            Interval::Hour,
        ),
        ResultsQuery::new(
            w,
            utc("2026-10-01T11:40:00Z"),
            utc("2026-10-02T20:05:00Z"),
            Tz::Europe__Berlin,
            Interval::Day,
        ),
    ]
}

/// Migrates `pool` up to, not including, the rollup migration.
async fn migrate_before_rollup<DB>(dir: &str, pool: &sqlx::Pool<DB>)
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut m = Migrator::new(path).await.expect("migrations");
    let before: Vec<_> = m
        .migrations
        .iter()
        .filter(|m| m.version < ROLLUP)
        .cloned()
        .collect();
    assert!(
        before.len() < m.migrations.len(),
        "the rollup migration exists"
    );
    m.migrations = before.into();
    m.run(pool).await.expect("migrate before the rollup");
}

// ------------------------------------------------------------- PostgreSQL

const PG_DIFF: [(&str, &str); 3] = [
    (
        "SELECT widget_id, hour, state, funnel_stage::int AS s, calls FROM results_hourly",
        "SELECT widget_id, date_trunc('hour', created_at, 'UTC'), state, \
         COALESCE(funnel_stage, 1)::int, COUNT(*) FROM phone_calls WHERE settled \
         GROUP BY 1, 2, 3, 4",
    ),
    (
        "SELECT widget_id, hour, target_name, to_phone_number, calls, connected, completed, \
         talk_secs FROM results_target_hourly",
        "SELECT widget_id, date_trunc('hour', created_at, 'UTC'), target_name, \
         to_phone_number, COUNT(*), COUNT(*) FILTER (WHERE funnel_stage >= 5), \
         COUNT(*) FILTER (WHERE state = 'completed'), COALESCE(SUM(connected_secs), 0)::bigint \
         FROM phone_calls WHERE settled GROUP BY 1, 2, 3, 4",
    ),
    (
        "SELECT widget_id, hour, target_name, to_phone_number, talk_secs, calls \
         FROM results_talk_hourly",
        "SELECT widget_id, date_trunc('hour', created_at, 'UTC'), target_name, \
         to_phone_number, connected_secs, COUNT(*) FROM phone_calls \
         WHERE settled AND connected_secs IS NOT NULL GROUP BY 1, 2, 3, 4, 5",
    ),
];

async fn pg_assert_rollup(pool: &PgPool, when: &str) {
    for (rollup, rows) in PG_DIFF {
        let diff: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM (({rollup} EXCEPT ALL {rows}) \
             UNION ALL ({rows} EXCEPT ALL {rollup})) d"
        ))
        .fetch_one(pool)
        .await
        .expect("compare");
        assert_eq!(diff, 0, "{when}: {rollup}");
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({rollup}) r"))
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(n > 0, "{when}: {rollup} is not empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rollup_equals_the_rows() {
    common::with_fresh_postgres(async |store, pool| {
        migrate_before_rollup("migrations/postgres", &pool).await;
        let calls = calls();
        for c in &calls {
            store.create(c).await.unwrap();
        }
        // Rows written before the funnel stage existed.
        sqlx::query(
            "UPDATE phone_calls SET funnel_stage = NULL WHERE id IN \
             (SELECT id FROM phone_calls WHERE settled ORDER BY id LIMIT 10)",
        )
        .execute(&pool)
        .await
        .unwrap();
        // The rollup's backfill, then the funnel-stage backfill.
        store.migrate().await.expect("migrate");
        pg_assert_rollup(&pool, "after migrating").await;
        check_reports(&*store, &calls).await;
        changes_pg(&store, &pool).await;
    })
    .await;
}

async fn check_reports<S: CampaignResults + ?Sized>(store: &S, calls: &[Call]) {
    for q in queries() {
        assert_eq!(
            store.report(&q).await.unwrap(),
            ResultsReport::from_calls(&q, calls),
            "{q:?}"
        );
    }
}

async fn changes_pg(store: &PgCallStore, pool: &PgPool) {
    let cutoff = utc("2026-10-02T00:00:00Z");
    let pass = store
        .retention_pass(cutoff, utc("2026-12-01T00:00:00Z"), 1000)
        .await
        .expect("retention");
    assert!(
        matches!(pass, RetentionPass::Ran(r) if r.calls_erased > 0),
        "{pass:?}"
    );
    pg_assert_rollup(pool, "after erasure").await;
    for (sql, when) in [
        (
            "DELETE FROM phone_calls WHERE id = (SELECT id FROM phone_calls WHERE settled \
             AND connected_secs IS NOT NULL ORDER BY id LIMIT 1)",
            "a row deleted",
        ),
        (
            "UPDATE phone_calls SET settled = false WHERE id = (SELECT id FROM phone_calls \
             WHERE settled ORDER BY id DESC LIMIT 1)",
            "a row unsettled",
        ),
        (
            "UPDATE phone_calls SET target_name = 'Outro', connected_secs = 99 WHERE id IN \
             (SELECT id FROM phone_calls WHERE settled AND state = 'completed' \
             ORDER BY id LIMIT 2)",
            "target and talk time changed",
        ),
        (
            "UPDATE phone_calls SET created_at = created_at + interval '3 hours' WHERE id IN \
             (SELECT id FROM phone_calls WHERE settled ORDER BY id LIMIT 3)",
            "moved to another hour",
        ),
        (
            "UPDATE phone_calls SET settled = true WHERE NOT settled",
            "every row settled",
        ),
    ] {
        let n = sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected();
        assert!(n > 0, "{when}");
        pg_assert_rollup(pool, when).await;
    }
}

// ----------------------------------------------------------------- SQLite

const SQLITE_DIFF: [(&str, &str); 3] = [
    (
        "SELECT widget_id, hour, state, funnel_stage, calls FROM results_hourly",
        "SELECT widget_id, substr(created_at, 1, 13), state, COALESCE(funnel_stage, 1), \
         COUNT(*) FROM phone_calls WHERE settled GROUP BY 1, 2, 3, 4",
    ),
    (
        "SELECT widget_id, hour, target_name, to_phone_number, calls, connected, completed, \
         talk_secs FROM results_target_hourly",
        "SELECT widget_id, substr(created_at, 1, 13), target_name, to_phone_number, COUNT(*), \
         COALESCE(SUM(funnel_stage >= 5), 0), SUM(state = 'completed'), \
         COALESCE(SUM(connected_secs), 0) FROM phone_calls WHERE settled \
         GROUP BY 1, 2, 3, 4",
    ),
    (
        "SELECT widget_id, hour, target_name, to_phone_number, talk_secs, calls \
         FROM results_talk_hourly",
        "SELECT widget_id, substr(created_at, 1, 13), target_name, to_phone_number, \
         connected_secs, COUNT(*) FROM phone_calls \
         WHERE settled AND connected_secs IS NOT NULL GROUP BY 1, 2, 3, 4, 5",
    ),
];

async fn sqlite_assert_rollup(pool: &SqlitePool, when: &str) {
    for (rollup, rows) in SQLITE_DIFF {
        // SQLite has no EXCEPT ALL; group keys are unique on both sides.
        let diff: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM (SELECT * FROM ({rollup} EXCEPT {rows}) \
             UNION ALL SELECT * FROM ({rows} EXCEPT {rollup}))"
        ))
        .fetch_one(pool)
        .await
        .expect("compare");
        assert_eq!(diff, 0, "{when}: {rollup}");
        let (a, b): (i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT COUNT(*) FROM ({rollup})), (SELECT COUNT(*) FROM ({rows}))"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(a, b, "{when}: {rollup}");
        assert!(a > 0, "{when}: {rollup} is not empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rollup_equals_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("calls.db"))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    migrate_before_rollup("migrations/sqlite", &pool).await;
    let store = SqliteCallStore::from_pool(pool.clone());
    let calls = calls();
    for c in &calls {
        store.create(c).await.unwrap();
    }
    sqlx::query(
        "UPDATE phone_calls SET funnel_stage = NULL WHERE id IN \
         (SELECT id FROM phone_calls WHERE settled ORDER BY id LIMIT 10)",
    )
    .execute(&pool)
    .await
    .unwrap();
    store.migrate().await.expect("migrate");
    sqlite_assert_rollup(&pool, "after migrating").await;
    check_reports(&store, &calls).await;

    let pass = store
        .retention_pass(
            utc("2026-10-02T00:00:00Z"),
            utc("2026-12-01T00:00:00Z"),
            1000,
        )
        .await
        .expect("retention");
    assert!(
        matches!(pass, RetentionPass::Ran(r) if r.calls_erased > 0),
        "{pass:?}"
    );
    sqlite_assert_rollup(&pool, "after erasure").await;
    for (sql, when) in [
        (
            "DELETE FROM phone_calls WHERE id = (SELECT id FROM phone_calls WHERE settled \
             AND connected_secs IS NOT NULL ORDER BY id LIMIT 1)",
            "a row deleted",
        ),
        (
            "UPDATE phone_calls SET settled = 0 WHERE id = (SELECT id FROM phone_calls \
             WHERE settled ORDER BY id DESC LIMIT 1)",
            "a row unsettled",
        ),
        (
            "UPDATE phone_calls SET target_name = 'Outro', connected_secs = 99 WHERE id IN \
             (SELECT id FROM phone_calls WHERE settled AND state = 'completed' \
             ORDER BY id LIMIT 2)",
            "target and talk time changed",
        ),
        (
            "UPDATE phone_calls SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, \
             '+3 hours') WHERE id IN (SELECT id FROM phone_calls WHERE settled ORDER BY id \
             LIMIT 3)",
            "moved to another hour",
        ),
        (
            "UPDATE phone_calls SET settled = 1 WHERE settled = 0",
            "every row settled",
        ),
    ] {
        let n = sqlx::query(sql)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        assert!(n > 0, "{when}");
        sqlite_assert_rollup(&pool, when).await;
    }
    store.close().await;
}
