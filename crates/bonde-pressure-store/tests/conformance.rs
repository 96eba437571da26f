//! Runs the conformance suite against every `CallStore`: the core's
//! in-memory reference, SQLite (a fresh temporary file per test) and
//! PostgreSQL (a fresh database per test on the server at
//! `TEST_DATABASE_URL`).
//!
//! PostgreSQL tests print `skipped: TEST_DATABASE_URL not set` and pass when
//! the variable is absent or the server unreachable — unless `CI=true`, where
//! they fail.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use bonde_pressure_core::InMemoryCallStore;
use bonde_pressure_store::{PgCallStore, SqliteCallStore, conformance};
use futures::FutureExt;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Skips (or, in CI, fails) a PostgreSQL test.
fn skip(reason: &str) {
    assert!(
        !in_ci(),
        "CI=true but {reason}: PostgreSQL tests cannot run"
    );
    eprintln!("skipped: {reason}");
}

async fn with_sqlite<F, Fut>(check: F)
where
    F: FnOnce(Arc<SqliteCallStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteCallStore::open(dir.path().join("calls.db"))
        .await
        .expect("open sqlite");
    let store = Arc::new(store);
    check(store.clone()).await;
    store.close().await;
}

/// Runs `check` against a PostgreSQL database created for it (and dropped
/// afterwards, even if the check fails).
async fn with_postgres<F, Fut>(check: F)
where
    F: FnOnce(Arc<PgCallStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        skip("TEST_DATABASE_URL not set");
        return;
    };
    let admin_options = PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL parses");
    let mut admin = match PgConnection::connect_with(&admin_options).await {
        Ok(c) => c,
        Err(e) => {
            skip(&format!(
                "PostgreSQL at TEST_DATABASE_URL unreachable ({e})"
            ));
            return;
        }
    };
    let name = format!("bps_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(admin_options.clone().database(&name))
        .await
        .expect("connect to test database");
    let store = Arc::new(PgCallStore::from_pool(pool));
    let outcome = std::panic::AssertUnwindSafe(async {
        let report = store.migrate().await.expect("migrate the test database");
        assert!(!report.applied.is_empty(), "a fresh database gets migrated");
        check(store.clone()).await;
    })
    .catch_unwind()
    .await;
    store.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop test database");
    let _ = admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    conformance::$check(Arc::new(InMemoryCallStore::new())).await;
                }
            )*
        }

        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_sqlite(|store| conformance::$check(store)).await;
                }
            )*
        }

        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    with_postgres(|store| conformance::$check(store)).await;
                }
            )*
        }
    };
}

conformance_tests!(
    create_get_round_trip,
    unicode_names_round_trip,
    find_by_sid_on_both_legs,
    duplicate_create_is_already_exists,
    stale_commit_conflicts_and_writes_nothing,
    commit_on_unknown_call_is_not_found,
    concurrent_updates_lose_nothing,
    event_log_keeps_insertion_order,
    append_events_to_unknown_call_is_not_found,
    orphan_events_are_stored,
    list_unfinished_for_reconciliation,
    stats_match_reference,
    stats_match_reference_on_random_calls,
    large_payloads_round_trip,
    commit_round_trips_every_outcome,
);

/// The read models a commit keeps up to date: the projection columns of
/// `phone_calls` and the legs in `twilio_calls`.
mod read_models {
    use super::*;
    use bonde_pressure_core::call::Leg;
    use bonde_pressure_core::{Call, CallEvent, CallStore, LegStatus};
    use conformance::{Outcome, at, build_call};

    /// A connected call, created, then committed as completed (42 s talk).
    async fn connected_then_completed(store: &dyn CallStore) -> Call {
        let call = build_call(30, at(0), Outcome::Connected);
        store.create(&call).await.unwrap();
        let (done, _) = call.apply(
            &CallEvent::LegStatus {
                leg: Leg::Target,
                sid: call.facts.target.sid.clone(),
                status: LegStatus::Completed,
                duration_secs: Some(42),
                sip_response_code: Some(200),
                at: Some(at(100)),
            },
            at(100),
        );
        store.commit(&done, &[]).await.unwrap();
        done
    }

    type LegRow = (String, String, String, Option<String>, Option<i64>, String);
    type CallRow = (String, bool, Option<i64>, Option<String>, Option<String>);

    fn check(call: &Call, legs: Vec<LegRow>, row: CallRow) {
        let a = call.facts.activist.sid.clone().unwrap();
        let b = call.facts.target.sid.clone().unwrap();
        assert_eq!(
            legs,
            vec![
                (
                    a.as_str().to_owned(),
                    call.id.to_string(),
                    "activist".to_owned(),
                    Some("in-progress".to_owned()),
                    None,
                    "+5511912345678".to_owned()
                ),
                (
                    b.as_str().to_owned(),
                    call.id.to_string(),
                    "target".to_owned(),
                    Some("completed".to_owned()),
                    Some(42),
                    "+5561998765432".to_owned()
                ),
            ]
        );
        assert_eq!(
            row,
            (
                "completed".to_owned(),
                true,
                Some(42),
                Some(a.as_str().to_owned()),
                Some(b.as_str().to_owned())
            )
        );
    }

    #[tokio::test]
    async fn sqlite_commit_updates_projections_and_legs() {
        with_sqlite(|store| async move {
            let call = connected_then_completed(&*store).await;
            let legs: Vec<LegRow> = sqlx::query_as(
                "SELECT sid, phone_call_id, leg, status, duration_secs, to_phone_number \
                 FROM twilio_calls ORDER BY leg",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let row: CallRow = sqlx::query_as(
                "SELECT state, terminal, connected_secs, from_call_sid, to_call_sid \
                 FROM phone_calls",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            check(&call, legs, row);
        })
        .await;
    }

    #[tokio::test]
    async fn postgres_commit_updates_projections_and_legs() {
        with_postgres(|store| async move {
            let call = connected_then_completed(&*store).await;
            let legs: Vec<LegRow> = sqlx::query_as(
                "SELECT sid, phone_call_id::text, leg, status, duration_secs, to_phone_number \
                 FROM twilio_calls ORDER BY leg",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            let row: CallRow = sqlx::query_as(
                "SELECT state, terminal, connected_secs, from_call_sid, to_call_sid \
                 FROM phone_calls",
            )
            .fetch_one(store.pool())
            .await
            .unwrap();
            check(&call, legs, row);
            let facts_state: String =
                sqlx::query_scalar("SELECT facts->'target'->>'status' FROM phone_calls")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert_eq!(facts_state, "completed", "facts are queryable jsonb");
        })
        .await;
    }
}
